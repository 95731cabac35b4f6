"""SecAgg+ protocol steps without any transport: sums, dropouts, what the aggregator can see."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from fedkube import buffers
from fedkube.secure import min_bits
from fedkube.secure.masks import add_masks
from fedkube.secure.ring import Ring
from fedkube.secure.secagg import ClientSession, ProtocolError, RoundSetup, neighbourhoods, unmask


def setup_for(n: int, t: int, neighbours: int | None = None, bits: int = 32, clip: float = 1.0,
              length: int = 0) -> RoundSetup:
    return RoundSetup("job", 3, "nonce", tuple(range(n)), neighbours, 11, t, Ring(bits, clip, n), length)


def run_protocol(setup: RoundSetup, updates: dict[int, np.ndarray], weights: dict[int, int],
                 drop_before_sharing: set[int] = frozenset(), drop_before_masking: set[int] = frozenset(),
                 drop_before_unmasking: set[int] = frozenset()) -> tuple[np.ndarray, int, set[int]]:
    """Everything a real round does, in memory; returns (decoded sum, weight sum, U3)."""
    sessions = {p: ClientSession(setup, p) for p in setup.participants}
    keys = {p: s.advert() for p, s in sessions.items()}
    u1 = set(setup.participants) - drop_before_sharing
    outbox = {p: sessions[p].share({q: keys[q] for q in u1}) for p in u1}
    u2 = u1 - drop_before_masking
    for p in u2:
        sessions[p].receive({q: outbox[q][p] for q in u2 if p in outbox[q]})
    total = np.zeros(next(iter(updates.values())).size + 1, dtype=setup.ring.dtype)
    for p in sorted(u2):  # the aggregator folds masked vectors into one running sum
        total += sessions[p].mask(setup.ring.encode(updates[p], weights[p]))
    survivors = u2
    revealed = {p: sessions[p].reveal(survivors, u2 - survivors) for p in survivors - drop_before_unmasking}
    unmask(total, setup, {p: k[1] for p, k in keys.items()}, u2, survivors, revealed)
    values, weight = setup.ring.decode(total)
    return values, weight, survivors


@st.composite
def rounds(draw: st.DrawFn) -> dict:
    n = draw(st.integers(3, 7))
    neighbours = draw(st.one_of(st.none(), st.integers(2, n - 1)))
    degree = n - 1 if neighbours is None or neighbours >= n - 1 else neighbours + (neighbours % 2 and n % 2)
    t = draw(st.integers(2, degree))
    dim = draw(st.integers(1, 40))
    updates = {p: np.array(draw(st.lists(st.floats(-2, 2, width=32), min_size=dim, max_size=dim)), np.float32)
               for p in range(n)}
    weights = {p: draw(st.integers(1, 5000)) for p in range(n)}
    bits = draw(st.sampled_from([min_bits(n), 32, 62]))
    return {"n": n, "t": t, "neighbours": neighbours, "updates": updates, "weights": weights, "bits": bits}


def plain_sum(setup: RoundSetup, updates: dict[int, np.ndarray], weights: dict[int, int], who: set[int]) -> np.ndarray:
    clip = setup.ring.clip_range
    return sum(weights[p] * np.clip(updates[p].astype(np.float64), -clip, clip) for p in who)


@settings(max_examples=60, deadline=None)
@given(rounds(), st.data())
def test_any_dropout_pattern_within_the_threshold_still_gives_the_plain_sum(case: dict, data: st.DataObject) -> None:
    setup = setup_for(case["n"], case["t"], case["neighbours"], case["bits"])
    graph = setup.graph()
    # Up to n - t clients vanish, after sending their masked vectors or after sharing their keys;
    # every secret to rebuild keeps t holders (neighbours and the owner) that reveal.
    stage = data.draw(st.sampled_from(["drop_before_unmasking", "drop_before_masking"]))
    gone = data.draw(st.sets(st.sampled_from(range(case["n"])), max_size=case["n"] - case["t"]))
    assume(all(len((graph[p] | {p}) - gone) >= case["t"] for p in graph))
    values, weight, survivors = run_protocol(setup, case["updates"], case["weights"], **{stage: gone})
    assert survivors == set(range(case["n"])) - (gone if stage == "drop_before_masking" else set())
    assert weight == sum(case["weights"][p] for p in survivors)
    expected = plain_sum(setup, case["updates"], case["weights"], survivors)
    assert np.abs(values - expected).max() <= setup.ring.sum_error_bound(weight) + 1e-9


def test_complete_graph_survives_n_minus_t_dropouts_after_masking() -> None:
    setup = setup_for(8, 5)
    rng = np.random.default_rng(3)
    updates = {p: rng.normal(0, 0.3, 64).astype(np.float32) for p in range(8)}
    weights = {p: int(rng.integers(1, 300)) for p in range(8)}
    values, weight, survivors = run_protocol(setup, updates, weights, drop_before_unmasking={1, 4, 6})
    assert survivors == set(range(8))
    assert np.abs(values - plain_sum(setup, updates, weights, survivors)).max() <= setup.ring.sum_error_bound(weight)


def test_every_kind_of_dropout_in_one_round() -> None:
    rng = np.random.default_rng(1)
    setup = setup_for(10, 3, neighbours=6)
    updates = {p: rng.normal(0, 0.3, 500).astype(np.float32) for p in range(10)}
    weights = {p: int(rng.integers(1, 300)) for p in range(10)}
    values, weight, survivors = run_protocol(setup, updates, weights, drop_before_sharing={0},
                                             drop_before_masking={4}, drop_before_unmasking={7})
    assert survivors == set(range(10)) - {0, 4}
    assert np.abs(values - plain_sum(setup, updates, weights, survivors)).max() <= setup.ring.sum_error_bound(weight)


def test_too_few_revealed_shares_cannot_unmask() -> None:
    setup = setup_for(4, 3)
    updates = {p: np.ones(8, np.float32) for p in range(4)}
    with pytest.raises(ProtocolError, match="shares revealed, 3 needed"):
        run_protocol(setup, updates, dict.fromkeys(range(4), 1), drop_before_unmasking={0, 1})


def test_a_client_never_reveals_both_shares_of_a_peer_nor_below_threshold() -> None:
    setup = setup_for(4, 3)
    sessions = {p: ClientSession(setup, p) for p in range(4)}
    keys = {p: s.advert() for p, s in sessions.items()}
    outbox = {p: s.share(keys) for p, s in sessions.items()}
    for p, s in sessions.items():
        s.receive({q: outbox[q][p] for q in range(4) if q != p})
    with pytest.raises(ProtocolError, match="both survived and dropped"):
        sessions[0].reveal({0, 1, 2}, {2, 3})
    with pytest.raises(ProtocolError, match="below threshold"):
        sessions[0].reveal({0, 1}, {2, 3})
    first = sessions[0].reveal({0, 1, 2}, {3})
    assert set(first) == {0, 1, 2, 3}  # its own share of b_0 too
    # Asked again (an aggregator restarted mid-unmasking): the very same shares, never the other halves.
    assert sessions[0].reveal([2, 1, 0], [3]) == first
    for survivors, dropped in (({0, 1, 2, 3}, set()), ({0, 1, 3}, {2})):
        with pytest.raises(ProtocolError, match="already revealed for other survivor lists"):
            sessions[0].reveal(survivors, dropped)


def test_a_tampered_share_does_not_authenticate() -> None:
    setup = setup_for(3, 2)
    sessions = {p: ClientSession(setup, p) for p in range(3)}
    keys = {p: s.advert() for p, s in sessions.items()}
    outbox = {p: s.share(keys) for p, s in sessions.items()}
    forged = bytearray(outbox[1][0])
    forged[-1] ^= 1
    with pytest.raises(ProtocolError, match="does not authenticate"):
        sessions[0].receive({1: bytes(forged), 2: outbox[2][0]})
    with pytest.raises(ProtocolError, match="does not authenticate"):  # a share replayed to another receiver
        sessions[0].receive({1: outbox[1][2], 2: outbox[2][0]})


def test_masked_vector_looks_uniform_and_uncorrelated_with_the_update() -> None:
    """The aggregator's view of one client: chi-square uniform over the ring, no linear trace of x."""
    setup = setup_for(5, 3)
    sessions = {p: ClientSession(setup, p) for p in range(5)}
    keys = {p: s.advert() for p, s in sessions.items()}
    outbox = {p: s.share(keys) for p, s in sessions.items()}
    for p, s in sessions.items():
        s.receive({q: outbox[q][p] for q in range(5) if q != p})
    d = 200_000
    update = np.linspace(-1, 1, d, dtype=np.float32)  # as structured as an update can be
    masked = sessions[0].mask(setup.ring.encode(update, 7))
    # Uniform: 256 equal bins by the top 8 bits of the 32-bit ring.
    counts = np.bincount((masked >> np.uint32(24)).astype(np.int64), minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-3
    # Uncorrelated: the masked integers say nothing linear about the update.
    r = np.corrcoef(masked[:-1].astype(np.float64), update.astype(np.float64))[0, 1]
    assert abs(r) < 5 / np.sqrt(d)
    # The unmasked encoding, by contrast, is anything but uniform.
    plain = setup.ring.encode(update, 7)
    plain_counts = np.bincount((plain >> np.uint32(24)).astype(np.int64), minlength=256)
    assert stats.chisquare(plain_counts).pvalue < 1e-10


def test_graph_is_k_regular_and_symmetric() -> None:
    for n, k in [(10, 4), (10, 3), (9, 4), (9, 3), (16, 6), (5, None), (5, 8)]:
        graph = neighbourhoods(range(n), k, seed=5)
        degree = n - 1 if k is None or k >= n - 1 else k + (k % 2 and n % 2)
        assert all(len(peers) == degree and p not in peers for p, peers in graph.items()), (n, k)
        assert all(p in graph[q] for p, peers in graph.items() for q in peers)
    assert neighbourhoods(range(10), 4, 1) != neighbourhoods(range(10), 4, 2)  # seeded, fresh per attempt


@pytest.mark.parametrize("n, k", [(10, 4), (10, 3), (9, 3), (12, 6), (16, 8)])
def test_graph_survivors_stay_connected_while_fewer_than_k_drop(n: int, k: int) -> None:
    """k-connected: masks still link every survivor, so only their total can be unmasked (the README's promise)."""
    graph = neighbourhoods(range(n), k, seed=7)
    for gone in itertools.combinations(range(n), k - 1):
        alive = set(range(n)) - set(gone)
        reached, frontier = set(), [min(alive)]
        while frontier:
            p = frontier.pop()
            if p not in reached:
                reached.add(p)
                frontier += [q for q in graph[p] if q in alive]
        assert reached == alive, gone


def test_ring_never_wraps_for_the_jobs_client_count() -> None:
    ring = Ring(32, 1.0, 16)
    worst = np.full(3, 1.0, np.float32)
    total = np.zeros(4, ring.dtype)
    for _ in range(16):
        total += ring.encode(worst, 65535)
    values, weight = ring.decode(total)
    assert weight == 16 * 65535 and np.allclose(values, 16 * 65535, rtol=1e-6)
    with pytest.raises(ValueError, match=f"at least {min_bits(1024)} bits"):
        Ring(32, 1.0, 1024)


def test_prg_masks_cancel_and_differ_by_seed() -> None:
    v = np.arange(1000, dtype=np.uint64)
    add_masks(v, [(b"a" * 32, 1)])
    assert not np.array_equal(v, np.arange(1000, dtype=np.uint64))
    add_masks(v, [(b"a" * 32, -1)])
    assert np.array_equal(v, np.arange(1000, dtype=np.uint64))
    a, b = np.zeros(64, np.uint32), np.zeros(64, np.uint32)
    add_masks(a, [(b"a" * 32, 1)])
    add_masks(b, [(b"b" * 32, 1)])
    assert not np.array_equal(a, b)


def test_prg_is_the_aes256_counter_mode_keystream_from_block_two() -> None:
    """The GCM shortcut draws exactly the documented PRG: AES-256-CTR from counter block 0^96 || 2."""
    seed = bytes(range(32))
    expected = Cipher(algorithms.AES(seed), modes.CTR(bytes(12) + (2).to_bytes(4, "big"))).encryptor()
    keystream = np.frombuffer(expected.update(bytes(4 * 200_003)), dtype=np.uint32)  # several blocks, a ragged end
    assert np.array_equal(add_masks(np.zeros(200_003, np.uint32), [(seed, 1)]), keystream)


def test_many_masks_in_one_pass_equal_one_mask_at_a_time() -> None:
    seeds = [(bytes([i]) * 32, 1 if i % 3 else -1) for i in range(7)]
    for dtype in (np.uint32, np.uint64):
        start = np.arange(3 * 65536 + 17, dtype=dtype)  # several blocks and a ragged end
        one_by_one = start.copy()
        for seed, sign in seeds:
            add_masks(one_by_one, [(seed, sign)])
        assert np.array_equal(add_masks(start.copy(), seeds), one_by_one)
        assert np.array_equal(add_masks(add_masks(start.copy(), seeds), [(s, -g) for s, g in seeds]), start)


@pytest.mark.parametrize("bits", [28, 32, 48, 62, 64])
def test_a_precomputed_mask_plus_the_encoded_update_is_the_masked_update(bits: int) -> None:
    """The client's shortcut (mask first, add the code later) sends exactly the protocol's vector."""
    rng = np.random.default_rng(bits)
    update = rng.normal(0, 0.5, 70_000).astype(np.float32)
    setup = setup_for(4, 3, bits=bits, length=update.size + 1)
    sessions = {p: ClientSession(setup, p) for p in range(4)}
    keys = {p: s.advert() for p, s in sessions.items()}
    outbox = {p: s.share(keys) for p, s in sessions.items()}
    for p, s in sessions.items():
        s.receive({q: outbox[q][p] for q in range(4) if q != p})
    precomputed = setup.ring.encode(update, 9, into=sessions[1].mask_vector())
    assert np.array_equal(precomputed, sessions[1].mask(setup.ring.encode(update, 9)))
    expected = sessions[1].mask_vector()
    spent = np.full(update.size + 1, 12345, setup.ring.dtype)  # an earlier attempt's delivered vector
    address = spent.ctypes.data
    buffers.give_back([spent])
    del spent  # nothing refers to it but the pool now
    taken = sessions[1].mask_vector()
    assert taken.ctypes.data == address and np.array_equal(taken, expected)  # its memory, none of its values
    assert precomputed.max() < 2 ** bits
    with pytest.raises(ValueError, match="70001"):
        setup.ring.encode(update[1:], 9, into=sessions[1].mask_vector())


def test_a_model_encoded_tensor_by_tensor_equals_its_flat_concatenation() -> None:
    """Clients encode their update's tensors in place; the vector is the one of the flat update."""
    rng = np.random.default_rng(5)
    tensors = [rng.normal(0, 0.3, shape).astype(np.float32) for shape in [(300, 400), (0,), (7,), (65536 + 3,)]]
    ring = Ring(32, 1.0, 16)
    flat = np.concatenate([t.reshape(-1) for t in tensors])
    assert np.array_equal(ring.encode(tensors, 5), ring.encode(flat, 5))
    with pytest.raises(ValueError, match=f"{flat.size + 1}"):
        ring.encode(tensors, 5, into=np.zeros(flat.size, ring.dtype))
    # and back into the model's tensors (the aggregator's float sums), with no flat temporary
    targets = [np.empty(t.shape, np.float32) for t in tensors]
    values, weight = ring.decode(ring.encode(tensors, 5))
    assert ring.decode_into(ring.encode(tensors, 5), targets) == weight == 5
    assert np.array_equal(np.concatenate([t.reshape(-1) for t in targets]), values.astype(np.float32))
    with pytest.raises(ValueError, match="does not fill"):
        ring.decode_into(ring.encode(tensors, 5), targets[1:])


@pytest.mark.parametrize("bits", [28, 32, 48, 62, 64])
def test_ring_codes_negative_and_positive_sums_at_every_width(bits: int) -> None:
    ring = Ring(bits, 2.0, 8)
    updates = [np.array([-2.5, -1.0, -ring.step / 3, 0.0, 0.7, 2.0], np.float32) * s for s in (1, -0.5, 0.25)]
    total = np.zeros(7, ring.dtype)
    for update in updates:
        total += ring.encode(update, 3)
    values, weight = ring.decode(ring.reduce(total))
    expected = sum(3 * np.clip(u.astype(np.float64), -2, 2) for u in updates)
    assert weight == 9 and np.abs(values - expected).max() <= ring.sum_error_bound(weight)
