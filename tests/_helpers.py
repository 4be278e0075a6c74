"""Test helpers shared by several test files."""
import jax


def counting_model(model):
    """The same denoiser with a host callback that counts executed evaluations and their batch rows.

    Only branches that actually run call back, so the count is the true number of model calls.
    Returns (model, calls) where calls = {"n": int, "rows": [batch sizes]}.
    """
    calls = {"n": 0, "rows": []}

    def bump(x):
        calls["n"] += 1
        calls["rows"].append(x.shape[0])
        return x

    class Counted(type(model)):
        def __call__(self, x, t, cond=None):
            out = super().__call__(x, t, cond)
            return jax.pure_callback(bump, jax.ShapeDtypeStruct(out.shape, out.dtype), out)

    counted = object.__new__(Counted)
    for f in model.__dataclass_fields__:
        object.__setattr__(counted, f, getattr(model, f))
    return counted, calls
