"""MixtureConfig errors, the built Mixture, and TaskStream's batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raretask.config import ConfigError
from raretask.synthetic.mixture import MixtureConfig, Placement, TaskConfig, TasksFromConfig, TaskStream

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def _task(name, **kw):
    return TaskConfig(name=name, **kw)


def _build_error(**kw) -> str:
    with pytest.raises(ConfigError) as e:
        MixtureConfig(**kw).build()
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------------------------- config errors


def test_frequencies_must_sum_to_one():
    msg = _build_error(dim=4, tasks=[_task("a", frequency=0.5, rank=1), _task("b", frequency=0.4, rank=1)])
    assert msg.startswith("mixture.tasks:") and "0.9" in msg


def test_missing_or_nonpositive_frequency():
    assert "'b'" in _build_error(dim=4, tasks=[_task("a", frequency=1.0, rank=1), _task("b", rank=1)])
    msg = _build_error(dim=4, tasks=[_task("a", frequency=1.0, rank=1), _task("b", frequency=0.0, rank=1)])
    assert msg.startswith("mixture.tasks[1].frequency:")


@pytest.mark.parametrize("bad", [-1.0, 0.0])
def test_nonpositive_eigenvalue(bad):
    msg = _build_error(dim=4, tasks=[_task("a", frequency=1.0, eigenvalues=[2.0, bad])])
    assert msg.startswith("mixture.tasks[0].eigenvalues[1]:")


def test_spectrum_errors():
    assert _build_error(dim=4, tasks=[_task("a", frequency=1.0, rank=0)]).startswith("mixture.tasks[0].rank:")
    assert _build_error(dim=4, tasks=[_task("a", frequency=1.0)]).startswith("mixture.tasks[0]:")
    msg = _build_error(dim=4, tasks=[_task("a", frequency=1.0, rank=3, eigenvalues=[1.0, 0.5])])
    assert msg.startswith("mixture.tasks[0].rank:")
    msg = _build_error(dim=4, tasks=[_task("a", frequency=1.0, rank=1, scale=0.0)])
    assert msg.startswith("mixture.tasks[0].scale:")


def test_zipf_with_per_task_frequencies():
    msg = _build_error(dim=4, zipf=1.0, tasks=[_task("a", frequency=0.5, rank=1), _task("b", frequency=0.5, rank=1)])
    assert msg.startswith("mixture.zipf:")
    assert _build_error(dim=4, zipf=-1.0, tasks=[_task("a", rank=1)]).startswith("mixture.zipf:")


def test_orthogonal_total_rank_exceeds_dim():
    msg = _build_error(dim=4, zipf=1.0, tasks=[_task("a", rank=3), _task("b", rank=2)])
    assert msg.startswith("mixture.tasks[1].rank:") and "5" in msg
    # random placement only needs each rank <= dim
    MixtureConfig(dim=4, zipf=1.0, placement=Placement.RANDOM, tasks=[_task("a", rank=3), _task("b", rank=2)]).build()
    msg = _build_error(dim=4, zipf=1.0, placement=Placement.RANDOM, tasks=[_task("a", rank=5)])
    assert msg.startswith("mixture.tasks[0].rank:")


def test_duplicate_names_and_no_tasks():
    assert _build_error(dim=4, zipf=1.0, tasks=[_task("a", rank=1), _task("a", rank=1)]).startswith("mixture.tasks:")
    assert _build_error(dim=4, zipf=1.0).startswith("mixture.tasks:")
    assert _build_error(dim=0, zipf=1.0, tasks=[_task("a", rank=1)]).startswith("mixture.dim:")
    assert _build_error(dim=4, zipf=1.0, noise=-0.1, tasks=[_task("a", rank=1)]).startswith("mixture.noise:")


def _npy(tmp_path, C, name="c.npy"):
    p = tmp_path / name
    np.save(p, np.asarray(C))
    return str(p)


@pytest.mark.parametrize("matrix,words", [
    (np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), "not symmetric"),
    (np.diag([1.0, -0.5, 0.0]), "positive semi-definite"),
    (np.eye(4), "shape"),
    (np.zeros((3, 3)), "zero"),
    (np.diag([1.0, np.nan, 0.0]), "NaN"),
])
def test_bad_npy_covariance(tmp_path, matrix, words):
    msg = _build_error(dim=3, tasks=[_task("a", frequency=1.0, covariance=_npy(tmp_path, matrix))])
    assert msg.startswith("mixture.tasks[0].covariance:") and words in msg


def test_npy_missing_unreadable_or_combined(tmp_path):
    msg = _build_error(dim=3, tasks=[_task("a", frequency=1.0, covariance=str(tmp_path / "nope.npy"))])
    assert msg.startswith("mixture.tasks[0].covariance:") and "not found" in msg
    (tmp_path / "junk.npy").write_text("not an array")
    msg = _build_error(dim=3, tasks=[_task("a", frequency=1.0, covariance=str(tmp_path / "junk.npy"))])
    assert msg.startswith("mixture.tasks[0].covariance:")
    msg = _build_error(dim=3, tasks=[_task("a", frequency=1.0, rank=1, covariance=_npy(tmp_path, np.eye(3)))])
    assert msg.startswith("mixture.tasks[0].covariance:")


@pytest.mark.parametrize("count,names", [
    (3, ["t00", "t01", "t02"]),
    (12, [f"t{i:02d}" for i in range(12)]),
    (101, [f"t{i:03d}" for i in range(101)]),
])
def test_tasks_from_generates_names_and_ranks(count, names):
    cfg = MixtureConfig(dim=8, zipf=1.0, placement=Placement.RANDOM,
                        tasks_from=TasksFromConfig(count=count, rank=2, decay=1.0, scale=3.0, prefix="t"))
    mix = cfg.build()
    assert mix.names == names
    assert mix.ranks == [2] * count
    for lam in mix.eigenvalues:
        np.testing.assert_allclose(lam, [3.0, 1.5])


def test_tasks_from_errors():
    both = MixtureConfig(dim=8, zipf=1.0, tasks=[_task("a", rank=1)], tasks_from=TasksFromConfig(count=2, rank=1))
    with pytest.raises(ConfigError, match=r"^mixture\.tasks_from:"):
        both.build()
    msg = _build_error(dim=4, zipf=1.0, tasks_from=TasksFromConfig(count=3, rank=2))
    assert msg.startswith("mixture.tasks_from.rank:")  # orthogonal 3 x 2 > 4


def test_string_placement_random():
    mix = MixtureConfig(dim=4, placement="random", seed=0, tasks=[_task("a", frequency=1.0, rank=2)]).build()
    assert not np.allclose(np.abs(mix.bases[0]), np.eye(4)[:, :2])


def test_string_placement_orthogonal_gives_orthogonal_blocks():
    mix = MixtureConfig(dim=4, placement="orthogonal", tasks=[_task("a", frequency=1.0, rank=2)]).build()
    np.testing.assert_array_equal(mix.bases[0], np.eye(4)[:, :2])


# ------------------------------------------------------------------------------------------------------ Mixture


def _mix(placement=Placement.ORTHOGONAL, seed=0, noise=0.0):
    return MixtureConfig(dim=8, zipf=1.0, placement=placement, seed=seed, noise=noise, tasks=[
        _task("a", rank=3, decay=1.0, scale=2.0), _task("b", rank=1, scale=1.5),
        _task("c", eigenvalues=[1.0, 0.5])]).build()


def test_orthogonal_placement_bases():
    mix = _mix()
    assert mix.orthogonal
    B = np.concatenate(mix.bases, axis=1)
    np.testing.assert_array_equal(B, np.eye(8)[:, :6])  # blocks in task order
    for k in range(3):
        for j in range(3):
            G = mix.bases[k].T @ mix.bases[j]
            np.testing.assert_allclose(G, np.eye(mix.ranks[k]) if k == j else 0.0, atol=0)
    np.testing.assert_allclose(mix.traces, [2 + 1 + 2 / 3, 1.5, 1.5])
    np.testing.assert_allclose(mix.frequencies, np.array([1, 1 / 2, 1 / 3]) / (11 / 6))


def test_random_placement_seeded():
    a, b, c = _mix(Placement.RANDOM, seed=1), _mix(Placement.RANDOM, seed=1), _mix(Placement.RANDOM, seed=2)
    assert not a.orthogonal
    for k in range(3):
        np.testing.assert_array_equal(a.bases[k], b.bases[k])
        np.testing.assert_allclose(a.bases[k].T @ a.bases[k], np.eye(a.ranks[k]), atol=1e-12)
        assert not np.allclose(a.bases[k], c.bases[k])


@pytest.mark.parametrize("placement", [Placement.ORTHOGONAL, Placement.RANDOM])
def test_teachers(placement):
    mix = _mix(placement, seed=3)
    A = mix.teachers()
    assert A.shape == (3, 3, 8)
    M = np.zeros((8, 8))
    for k in range(3):
        B, lam = mix.bases[k], mix.eigenvalues[k]
        C = B @ np.diag(lam) @ B.T
        np.testing.assert_allclose(A[k].T @ A[k], C, atol=1e-12)
        np.testing.assert_allclose(mix.covariance(k), C, atol=1e-12)
        np.testing.assert_array_equal(A[k, mix.ranks[k]:], 0.0)  # padded output rows
        M += mix.frequencies[k] * C
    np.testing.assert_allclose(mix.mixture_covariance(), M, atol=1e-12)


# -------------------------------------------------------------------------------------------------- TaskStream


def _groups(batch, S, K):
    ends = batch.offsets.tolist()
    starts = [0] + ends[:-1]
    return [(g // K, g % K, s, e) for g, (s, e) in enumerate(zip(starts, ends))]


@pytest.mark.parametrize("placement", [Placement.ORTHOGONAL, Placement.RANDOM])
def test_sample_shapes_and_targets(placement):
    mix = _mix(placement, seed=4)
    S, K, B = 2, 3, 40
    stream = TaskStream(mix, seeds=[0, 5], device=CPU)
    for _ in range(3):
        batch = stream.sample(B)
        assert batch.x.shape == (S, B, 8) and batch.y.shape == (S * B, 3)
        assert batch.counts.shape == (S, K) and batch.offsets.shape == (S * K,)
        assert batch.offsets.dtype == torch.int32
        assert batch.counts.sum(1).tolist() == [B, B]
        np.testing.assert_array_equal(batch.offsets.numpy(), np.cumsum(batch.counts.numpy().ravel()))
        x = batch.x.reshape(S * B, 8).double().numpy()
        y = batch.y.double().numpy()
        for seed, k, s, e in _groups(batch, S, K):
            assert seed * B <= s <= e <= (seed + 1) * B  # a group stays within its seed's rows
            expected = x[s:e] @ mix.teacher(k).T
            np.testing.assert_allclose(y[s:e, :mix.ranks[k]], expected, atol=1e-5)
            np.testing.assert_array_equal(y[s:e, mix.ranks[k]:], 0.0)


def test_empirical_frequencies_match_pi():
    mix = _mix()
    stream = TaskStream(mix, seeds=[0, 1], device=CPU)
    total = torch.zeros(2, 3, dtype=torch.float64)
    batches, B = 10, 4096
    for _ in range(batches):
        total += stream.sample(B).counts.double()
    n = batches * B
    pi = mix.frequencies
    tol = 5 * np.sqrt(pi * (1 - pi) / n)
    for s in range(2):
        assert np.all(np.abs(total[s].numpy() / n - pi) < tol)


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_seed_stream_independent_of_neighbours(noise):
    mix = _mix(noise=noise)
    alone = TaskStream(mix, seeds=[3], device=CPU)
    together = TaskStream(mix, seeds=[0, 3, 7], device=CPU)
    B = 24
    for _ in range(3):
        a, t = alone.sample(B), together.sample(B)
        assert torch.equal(a.x[0], t.x[1])
        assert torch.equal(a.counts[0], t.counts[1])
        assert torch.equal(a.y, t.y[B:2 * B])
    other = TaskStream(mix, seeds=[4], device=CPU).sample(B)
    assert not torch.equal(other.x[0], a.x[0])


def test_stream_state_roundtrip():
    mix = _mix(noise=0.1)
    stream = TaskStream(mix, seeds=[0, 1], device=CPU)
    stream.sample(8)
    state = stream.state()
    first = stream.sample(16)
    stream.load_state(state)
    again = stream.sample(16)
    assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y) and torch.equal(first.counts, again.counts)


def test_label_noise_only_on_real_outputs():
    mix = _mix(noise=0.5)  # ranks 3, 1, 2 -> r_max 3
    stream = TaskStream(mix, seeds=[0, 1], device=CPU)
    resid = {k: [] for k in range(3)}
    for _ in range(4):
        batch = stream.sample(640)
        x = batch.x.reshape(-1, 8).double().numpy()
        y = batch.y.double().numpy()
        for _, k, s, e in _groups(batch, 2, 3):
            r = mix.ranks[k]
            np.testing.assert_array_equal(y[s:e, r:], 0.0)  # padded dims exactly zero
            resid[k].append(y[s:e, :r] - x[s:e] @ mix.teacher(k).T)
    for k in range(3):
        z = np.concatenate(resid[k]).ravel()
        assert z.size > 500
        assert abs(z.std() - 0.5) < 0.05 and abs(z.mean()) < 0.05
