"""Search strategies as pure ask/tell pairs with explicit PRNG keys (optax's init/update shape).

``state = strategy.init(key, initial_genomes)``; then per generation
``candidates, state = strategy.ask(state)``, score them, ``state = strategy.tell(state, candidates,
scores)``. Neither call mutates its arguments: each returns a new :class:`SearchState`, which holds
everything that determines the future of the search (population, every evaluated genome and score,
the key, the predictor's parameters), so a restored state continues exactly as the uninterrupted
run would. :func:`run_generations` is the ONE generations loop (plain, budgeted and stitched
searches all use it).

* :class:`Evolution`: (mu + lambda) evolution: the ``top_k`` best are parents, each child is a
  crossover of two parents (probability ``space.p_crossover``) followed by a mutation; the first
  ``timesteps_only`` generations move only the time nodes.
* :class:`PredictorSearch`: the same proposal distribution, but each generation ``screen``
  proposals are ranked by a :class:`search.predictor.Predictor` trained on all evaluations so far,
  and only the best ``children`` are evaluated (plus ``explore`` random proposals). Before a
  round's evaluations are used for training, the predictor's Spearman correlation on them is
  recorded: a held-out measurement (S³, Liu et al. 2023).

Constraints plug in as hooks (:class:`Hooks`): ``moves`` are extra proposal moves applied to every
child, ``constraint`` maps a genome to an admissible one (or None to drop it), e.g. a compute budget
(:mod:`search.budget`).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import jax
import numpy as np

from stepwise.search.predictor import Predictor, spearman
from stepwise.search.space import Genome, SearchSpace, crossover, genome_hash, mutate, random_genome

STRATEGIES = ("evolution", "predictor")   # searched by ask/tell; "hybrid" wraps either in Memetic


def numpy_rng(key) -> np.random.Generator:
    """A NumPy generator seeded from a jax key (the only source of randomness of the search)."""
    bits = np.asarray(jax.random.bits(key, (4,), dtype=np.uint32))
    return np.random.default_rng([int(b) for b in bits])


@dataclasses.dataclass(frozen=True)
class SearchState:
    generation: int
    key: np.ndarray                        # raw uint32 key data
    population: tuple                      # ((Genome, score), ...), best first
    archive: dict                          # plan hash -> (Genome, score): every evaluation (never mutated)
    history: tuple                         # per generation: dict of progress numbers
    predictor_params: dict | None = None
    rank_correlations: tuple = ()
    pending_initial: tuple = ()            # evaluated by the first ask
    refined: tuple = ()                    # plan hashes already refined by a memetic strategy

    @property
    def best(self) -> tuple[Genome, float]:
        return self.population[0]

    def split(self) -> tuple[jax.Array, "SearchState"]:
        """A fresh subkey and the state that has consumed it."""
        k = jax.random.wrap_key_data(np.asarray(self.key, np.uint32))
        k, sub = jax.random.split(k)
        return sub, dataclasses.replace(self, key=np.asarray(jax.random.key_data(k)))

    def replace(self, **kw) -> "SearchState":
        return dataclasses.replace(self, **kw)


# ----------------------------------------------------------------------------- options
SKIP_SCHEDULES = ("joint", "two_stage")


@dataclasses.dataclass(frozen=True)
class EvolutionOptions:
    """(mu + lambda) selection: ``population`` survivors, parents from the best ``top_k``,
    ``children`` true evaluations per generation, nodes-only moves for ``timesteps_only`` generations,
    ``generations`` after the initial population.

    ``skip_schedule`` (used when the space searches skip masks): ``"joint"`` lets masks change with
    everything else after the nodes-only generations; ``"two_stage"`` is AutoDiffusion's schedule
    (Li et al. 2023): the first half of the generations search nodes and solver decisions with the
    full network, the second half only the per-step masks of the plans found."""

    population: int = 16
    top_k: int = 6
    children: int = 12
    timesteps_only: int = 3
    generations: int = 12
    skip_schedule: str = "joint"

    def moves_at(self, generation: int) -> tuple[str, ...]:
        """What mutation and crossover may change in ``generation`` (see ``search.space.MOVES``)."""
        if generation <= self.timesteps_only:
            return ("nodes",)
        if self.skip_schedule == "two_stage":
            return ("masks",) if generation > self.generations // 2 else ("nodes", "decisions")
        return ("nodes", "decisions", "masks")

    def __post_init__(self):
        if self.skip_schedule not in SKIP_SCHEDULES:
            raise ValueError(f"search.skip_schedule: {self.skip_schedule!r} is invalid; allowed: {list(SKIP_SCHEDULES)}")
        for f, lo in (("population", 2), ("top_k", 1), ("children", 1), ("timesteps_only", 0),
                      ("generations", 0)):
            v = getattr(self, f)
            if not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"search.{f}: {v!r} is invalid; allowed: an integer >= {lo}")


@dataclasses.dataclass(frozen=True)
class PredictorOptions:
    """S³-style screening: ``screen`` proposals ranked per generation, ``explore`` unscreened random
    ones among the children, screening starts after ``warmup`` evaluations; the ranker's width,
    learning rate and training steps per generation."""

    screen: int = 128
    explore: int = 1
    warmup: int = 24
    hidden: int = 64
    lr: float = 3e-3
    train_steps: int = 200

    def __post_init__(self):
        for f, lo in (("screen", 1), ("explore", 0), ("warmup", 0), ("hidden", 1), ("train_steps", 1)):
            v = getattr(self, f)
            if not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"search.predictor_{f}: {v!r} is invalid; allowed: an integer >= {lo}")
        if not self.lr > 0:
            raise ValueError(f"search.predictor_lr: {self.lr!r} is invalid; allowed: a positive number")


@dataclasses.dataclass(frozen=True)
class Hooks:
    """Extension points of a strategy: ``moves`` (genome, rng) -> genome applied to each child with
    probability ``p_moves``; ``constraint`` genome -> admissible genome or None (dropped)."""

    moves: tuple[Callable[[Genome, np.random.Generator], Genome], ...] = ()
    p_moves: float = 0.5
    constraint: Callable[[Genome], Genome | None] | None = None

    def admit(self, genome: Genome) -> Genome | None:
        return genome if self.constraint is None else self.constraint(genome)


# ----------------------------------------------------------------------------- evolution
class Evolution:
    """(mu + lambda) evolution over genomes of ``space`` (see module doc)."""

    name = "evolution"

    def __init__(self, space: SearchSpace, options: EvolutionOptions = EvolutionOptions(),
                 hooks: Hooks = Hooks()):
        self.space, self.options, self.hooks = space, options, hooks

    def _admissible(self, genomes: Sequence[Genome], seen: set) -> list[Genome]:
        """Constrained, de-duplicated genomes (``seen`` holds plan hashes; it is a local set)."""
        out = []
        for g in genomes:
            g = self.hooks.admit(g)
            if g is None:
                continue
            h = genome_hash(g, self.space)
            if h in seen:
                continue
            seen.add(h)
            out.append(g)
        return out

    def init(self, key, initial: Sequence[Genome]) -> SearchState:
        """Initial state; ``initial`` genomes (e.g. the encoded baselines) are evaluated by the
        first ask, topped up with mutations of them (or random genomes) to the population size."""
        st = SearchState(0, np.asarray(jax.random.key_data(key)), (), {}, ())
        sub, st = st.split()
        rng = numpy_rng(sub)
        pool = [g for g in (self.hooks.admit(g) for g in initial) if g is not None]
        if initial and not pool:
            raise ValueError("search: no initial genome satisfies the search's constraint")
        while len(pool) < self.options.population:
            pool.append(mutate(pool[rng.integers(len(pool))], self.space, rng) if pool
                        else random_genome(self.space, rng))
        return st.replace(pending_initial=tuple(self._admissible(pool, set())))

    def proposals(self, st: SearchState, rng: np.random.Generator, count: int) -> list[Genome]:
        """Up to ``count`` new admissible children of the best ``top_k`` (none already evaluated)."""
        parents = [g for g, _ in st.population[:self.options.top_k]]
        moves = self.options.moves_at(st.generation)
        out, seen = [], set(st.archive)
        for _ in range(count * 4):
            if len(out) >= count:
                break
            a = parents[rng.integers(len(parents))]
            if len(parents) > 1 and rng.random() < self.space.p_crossover:
                b = parents[rng.integers(len(parents))]
                a = crossover(a, b, self.space, rng, moves=moves)
            child = mutate(a, self.space, rng, moves=moves)
            for move in self.hooks.moves:
                if rng.random() < self.hooks.p_moves:
                    child = move(child, rng)
            out += self._admissible([child], seen)
        return out

    def ask(self, st: SearchState) -> tuple[list[Genome], SearchState]:
        if not st.population:
            return list(st.pending_initial), st
        sub, st = st.split()
        return self.proposals(st, numpy_rng(sub), self.options.children), st

    def tell(self, st: SearchState, candidates: Sequence[Genome], scores) -> SearchState:
        archive = dict(st.archive)
        for g, s in zip(candidates, scores):
            archive.setdefault(genome_hash(g, self.space), (g, float(s)))
        pool = {genome_hash(g, self.space): (g, s) for g, s in st.population}
        for g, s in zip(candidates, scores):
            pool.setdefault(genome_hash(g, self.space), (g, float(s)))
        # stable order: by score, ties by hash (independent of evaluation order)
        ranked = sorted(pool.items(), key=lambda kv: (kv[1][1], kv[0]))
        return st.replace(archive=archive, population=tuple(v for _, v in ranked[:self.options.population]),
                          generation=st.generation + 1, pending_initial=())


class PredictorSearch(Evolution):
    """Evolution whose children are screened by a learned ranker (see module doc)."""

    name = "predictor"

    def __init__(self, space: SearchSpace, options: EvolutionOptions = EvolutionOptions(),
                 predictor: PredictorOptions = PredictorOptions(), hooks: Hooks = Hooks(), seed: int = 0):
        super().__init__(space, options, hooks)
        self.predictor_options = predictor
        self.predictor = Predictor(space, hidden=predictor.hidden, lr=predictor.lr,
                                   train_steps=predictor.train_steps)
        self.seed = int(seed)

    def init(self, key, initial):
        return super().init(key, initial).replace(predictor_params=self.predictor.init(self.seed))

    def ask(self, st):
        if not st.population:
            return list(st.pending_initial), st
        sub, st = st.split()
        rng = numpy_rng(sub)
        o = self.predictor_options
        if len(st.archive) < o.warmup:
            return self.proposals(st, rng, self.options.children), st
        pool = self.proposals(st, rng, o.screen)
        pred = self.predictor.predict(st.predictor_params, pool)
        order = np.argsort(pred, kind="stable")
        k = max(1, self.options.children - o.explore)
        chosen = list(order[:k])
        rest = order[k:]
        if o.explore and rest.size:
            chosen += list(rng.choice(rest, size=min(o.explore, rest.size), replace=False))
        return [pool[i] for i in chosen], st

    def tell(self, st, candidates, scores):
        new = [(g, s) for g, s in zip(candidates, scores)
               if genome_hash(g, self.space) not in st.archive]
        corr = st.rank_correlations
        if st.population and len(st.archive) >= self.predictor_options.warmup and len(new) >= 3:
            held_out = spearman(self.predictor.predict(st.predictor_params, [g for g, _ in new]),
                                [s for _, s in new])
            corr = corr + ({"generation": st.generation, "spearman": held_out, "n": len(new)},)
        st = super().tell(st, candidates, scores).replace(rank_correlations=corr)
        gs, ss = zip(*st.archive.values()) if st.archive else ((), ())
        _, st = st.split()  # the key stream reserves one draw per fit
        params, _ = self.predictor.fit(st.predictor_params, list(gs), list(ss))
        return st.replace(predictor_params=params)


# ----------------------------------------------------------------------------- memetic (hybrid)
class Memetic:
    """A strategy whose elites are refined by local search (a memetic algorithm, Moscato 1989):
    each generation, the ``top`` best genomes of the population not refined before are passed
    through ``refine`` (e.g. a few gradient steps on their time nodes through the sampler,
    :func:`search.learned.node_refiner`) and the refined genomes are evaluated beside the base
    strategy's children; a refined genome that scores well enters the population (Lamarckian), so
    it is itself refined next generation. The discrete columns stay the base strategy's business.

    ``refine`` must be a deterministic function of the genome (the state records which hashes were
    refined, so a resumed search refines exactly what the uninterrupted one would)."""

    name = "hybrid"

    def __init__(self, base: Evolution, refine: Callable[[Genome], Genome], top: int = 2):
        if not isinstance(top, (int, np.integer)) or top < 1:
            raise ValueError(f"search.hybrid_top: {top!r} is invalid; allowed: an integer >= 1")
        self.base, self.refine, self.top = base, refine, int(top)
        self.space, self.options, self.hooks = base.space, base.options, base.hooks
        self.refine_seconds = 0.0      # wall time spent in ``refine`` (instrumentation, not state)

    def init(self, key, initial: Sequence[Genome]) -> SearchState:
        return self.base.init(key, initial)

    def ask(self, st: SearchState) -> tuple[list[Genome], SearchState]:
        cands, st = self.base.ask(st)
        if not st.population:
            return cands, st
        seen = set(st.archive) | {genome_hash(g, self.space) for g in cands}
        elites = [g for g, _ in st.population if genome_hash(g, self.space) not in st.refined][:self.top]
        refined = []
        t0 = time.perf_counter()
        for g in elites:
            r = self.hooks.admit(self.refine(g))
            h = None if r is None else genome_hash(r, self.space)
            if h is not None and h not in seen:
                seen.add(h)
                refined.append(r)
        self.refine_seconds += time.perf_counter() - t0
        done = st.refined + tuple(genome_hash(g, self.space) for g in elites)
        return cands + refined, st.replace(refined=done)

    def tell(self, st: SearchState, candidates: Sequence[Genome], scores) -> SearchState:
        return self.base.tell(st, candidates, scores)


def make_strategy(name: str, space: SearchSpace, evolution: EvolutionOptions = EvolutionOptions(),
                  predictor: PredictorOptions | None = None, hooks: Hooks = Hooks(), seed: int = 0):
    """A strategy by name. Options a strategy does not use are an error (``predictor`` options
    with ``"evolution"``), never silently dropped."""
    if name == "evolution":
        if predictor is not None:
            raise ValueError("search.strategy: 'evolution' does not screen with a predictor; the predictor "
                             "options (screen, explore, warmup, ...) need strategy 'predictor'")
        return Evolution(space, evolution, hooks)
    if name == "predictor":
        return PredictorSearch(space, evolution, predictor or PredictorOptions(), hooks, seed)
    raise ValueError(f"search.strategy: unknown {name!r}; allowed: {list(STRATEGIES)}")


def run_generations(strategy: Evolution, st: SearchState, score: Callable[[list[Genome]], list[float]],
                    generations: int, on_generation: Callable[[SearchState, list[float]], SearchState] | None = None,
                    seconds: dict | None = None) -> SearchState:
    """THE generations loop: ask, score, tell until ``st.generation > generations`` (generation 0
    evaluates the initial population). ``on_generation(state, scores) -> state`` records progress
    and checkpoints (it may add a history row); a generation without candidates just advances.
    ``seconds`` (a dict, updated in place) accumulates the wall time of ``ask`` (proposals, screening,
    memetic refinement), ``score`` and ``tell`` (selection, predictor training) and ``on_generation``."""
    clock = seconds if seconds is not None else {}
    for k in ("ask", "score", "tell", "on_generation"):
        clock.setdefault(k, 0.0)
    while st.generation <= generations:
        t0 = time.perf_counter()
        cands, st = strategy.ask(st)
        t1 = time.perf_counter()
        clock["ask"] += t1 - t0
        if not cands:
            st = st.replace(generation=st.generation + 1)
            continue
        scores = list(score(cands))
        t2 = time.perf_counter()
        st = strategy.tell(st, cands, scores)
        t3 = time.perf_counter()
        clock["score"] += t2 - t1
        clock["tell"] += t3 - t2
        if on_generation is not None:
            st = on_generation(st, scores)
            clock["on_generation"] += time.perf_counter() - t3
    return st
