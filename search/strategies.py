"""Search strategies as ask/tell objects with explicit PRNG keys.

``state = strategy.init(key, initial_genomes)``; then per generation
``candidates, state = strategy.ask(state)``, score them, ``state = strategy.tell(state, candidates,
scores)``. The state (a :class:`SearchState`) holds everything that determines the future of the
search (population, every evaluated genome and score, the key, the predictor's parameters), so a
restored state continues exactly as the uninterrupted run would.

* :class:`Evolution`: (mu + lambda) evolution: the ``top_k`` best are parents, each child is a
  crossover of two parents (probability ``p_crossover``) followed by a mutation; the first
  ``timesteps_only`` generations move only the time nodes.
* :class:`PredictorSearch`: the same proposal distribution, but each generation ``screen``
  proposals are ranked by a :class:`search.predictor.Predictor` trained on all evaluations so far,
  and only the best ``children`` are evaluated (plus ``explore`` random proposals). Before a
  round's evaluations are used for training, the predictor's Spearman correlation on them is
  recorded: a held-out measurement.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from search.predictor import Predictor, spearman
from search.space import Genome, SearchSpace, crossover, genome_hash, mutate


def numpy_rng(key) -> np.random.Generator:
    """A NumPy generator seeded from a jax key (the only source of randomness of the search)."""
    bits = np.asarray(jax.random.bits(key, (4,), dtype=np.uint32))
    return np.random.default_rng([int(b) for b in bits])


@dataclasses.dataclass
class SearchState:
    generation: int
    key: np.ndarray                        # raw uint32 key data
    population: list                       # [(Genome, score)], best first
    archive: dict                          # plan hash -> (Genome, score): every evaluation
    history: list                          # per generation: dict of progress numbers
    predictor_params: dict | None = None
    rank_correlations: list = dataclasses.field(default_factory=list)
    pending_initial: list = dataclasses.field(default_factory=list)  # evaluated by the first ask

    @property
    def best(self) -> tuple[Genome, float]:
        return self.population[0]

    def next_key(self):
        k = jax.random.wrap_key_data(np.asarray(self.key, np.uint32))
        k, sub = jax.random.split(k)
        self.key = np.asarray(jax.random.key_data(k))
        return sub


class Evolution:
    name = "evolution"

    def __init__(self, space: SearchSpace, population: int = 16, top_k: int = 6, children: int = 16,
                 timesteps_only: int = 0):
        if population < 2 or top_k < 1 or children < 1:
            raise ValueError("evolution: need population >= 2, top_k >= 1, children >= 1")
        self.space, self.pop_size, self.top_k, self.children = space, population, top_k, children
        self.timesteps_only = timesteps_only

    # -- state
    def init(self, key, initial: list[Genome]) -> SearchState:
        """Initial state; ``initial`` genomes (e.g. the encoded baselines) are evaluated by the
        first ask, topped up with mutations of them (or random genomes) to the population size."""
        st = SearchState(0, np.asarray(jax.random.key_data(key)), [], {}, [])
        rng = numpy_rng(st.next_key())
        pool = list(initial)
        from search.space import random_genome
        while len(pool) < self.pop_size:
            pool.append(mutate(pool[rng.integers(len(pool))], self.space, rng) if initial
                        else random_genome(self.space, rng))
        st.pending_initial = pool
        return st

    def _proposals(self, st: SearchState, rng: np.random.Generator, count: int) -> list[Genome]:
        parents = [g for g, _ in st.population[:self.top_k]]
        nodes_only = st.generation <= self.timesteps_only
        out, seen = [], set(st.archive)
        for _ in range(count * 4):
            if len(out) >= count:
                break
            a = parents[rng.integers(len(parents))]
            if len(parents) > 1 and rng.random() < self.space.p_crossover:
                b = parents[rng.integers(len(parents))]
                a = crossover(a, b, self.space, rng, nodes_only=nodes_only)
            child = mutate(a, self.space, rng, nodes_only=nodes_only)
            h = genome_hash(child, self.space)
            if h in seen:
                continue
            seen.add(h)
            out.append(child)
        return out

    def ask(self, st: SearchState) -> tuple[list[Genome], SearchState]:
        if not st.population:
            return list(st.pending_initial), st
        rng = numpy_rng(st.next_key())
        return self._proposals(st, rng, self.children), st

    def tell(self, st: SearchState, candidates: list[Genome], scores) -> SearchState:
        for g, s in zip(candidates, scores):
            st.archive.setdefault(genome_hash(g, self.space), (g, float(s)))
        pool = {genome_hash(g, self.space): (g, s) for g, s in st.population}
        for g, s in zip(candidates, scores):
            pool.setdefault(genome_hash(g, self.space), (g, float(s)))
        # stable order: by score, ties by hash (independent of evaluation order)
        ranked = sorted(pool.items(), key=lambda kv: (kv[1][1], kv[0]))
        st.population = [v for _, v in ranked[:self.pop_size]]
        st.generation += 1
        return st


class PredictorSearch(Evolution):
    name = "predictor"

    def __init__(self, space: SearchSpace, population: int = 16, top_k: int = 6, children: int = 8,
                 timesteps_only: int = 0, screen: int = 256, explore: int = 1, warmup: int = 24,
                 hidden: int = 64, lr: float = 3e-3, train_steps: int = 200, seed: int = 0):
        super().__init__(space, population, top_k, children, timesteps_only)
        self.screen, self.explore, self.warmup = screen, explore, warmup
        self.predictor = Predictor(space, hidden=hidden, lr=lr, train_steps=train_steps, seed=seed)

    def init(self, key, initial):
        st = super().init(key, initial)
        st.predictor_params = self.predictor.params
        return st

    def ask(self, st):
        if not st.population:
            return list(st.pending_initial), st
        rng = numpy_rng(st.next_key())
        if len(st.archive) < self.warmup:
            return self._proposals(st, rng, self.children), st
        self.predictor.params = st.predictor_params
        pool = self._proposals(st, rng, self.screen)
        pred = self.predictor.predict(pool)
        order = np.argsort(pred, kind="stable")
        k = max(1, self.children - self.explore)
        chosen = list(order[:k])
        rest = order[k:]
        if self.explore and rest.size:
            chosen += list(rng.choice(rest, size=min(self.explore, rest.size), replace=False))
        return [pool[i] for i in chosen], st

    def tell(self, st, candidates, scores):
        new = [(g, s) for g, s in zip(candidates, scores)
               if genome_hash(g, self.space) not in st.archive]
        if st.population and len(st.archive) >= self.warmup and len(new) >= 3:
            self.predictor.params = st.predictor_params
            held_out = spearman(self.predictor.predict([g for g, _ in new]), [s for _, s in new])
            st.rank_correlations.append({"generation": st.generation, "spearman": held_out, "n": len(new)})
        st = super().tell(st, candidates, scores)
        gs, ss = zip(*st.archive.values()) if st.archive else ((), ())
        self.predictor.params = st.predictor_params
        self.predictor.fit(list(gs), list(ss), st.next_key())
        st.predictor_params = self.predictor.params
        return st


def make_strategy(name: str, space: SearchSpace, **kw):
    if name == "evolution":
        kw = {k: v for k, v in kw.items() if k in ("population", "top_k", "children", "timesteps_only")}
        return Evolution(space, **kw)
    if name == "predictor":
        return PredictorSearch(space, **kw)
    raise ValueError(f"strategy: unknown {name!r}; allowed: ['evolution', 'predictor']")
