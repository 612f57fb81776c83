"""Unit tests of :mod:`training.models.retrieval`."""

from __future__ import annotations

import pytest
import torch

from training.models.retrieval import SASRec, SASRecConfig


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("lowpass", [0.0, 0.7])
def test_last_only_and_trimmed_padding_match_the_full_forward(lowpass: float, norm: str) -> None:
    torch.manual_seed(0)
    m = SASRec(SASRecConfig(num_items=30, max_len=12, dim=16, layers=2, heads=2, lowpass=lowpass,
                            norm=norm)).eval()
    seqs = torch.tensor([[0] * 8 + [3, 4, 5, 6], [0] * 10 + [7, 8]])
    with torch.no_grad():
        full = m.hidden(seqs)
        assert torch.allclose(m(seqs), full[:, -1], atol=1e-5)
        assert torch.allclose(m(seqs[:, -4:]), full[:, -1], atol=1e-5)  # leading pad columns cut
        later = seqs.clone()
        later[0, -1] = 9  # causal: a different last item changes no earlier position
        assert torch.allclose(m.hidden(later)[0, :-1], full[0, :-1], atol=1e-6)
        assert not torch.allclose(m.hidden(later)[0, -1], full[0, -1])


def test_seen_items_mask_covers_the_input_so_far_but_never_the_target() -> None:
    from training.models.retrieval import _seen_before

    seq = torch.tensor([[0, 0, 3, 1, 3, 2], [5, 4, 1, 2, 3, 4]])  # inputs, left-padded
    pos = torch.tensor([[0, 3, 1, 3, 2, 4], [4, 1, 2, 3, 4, 5]])  # next-item targets
    where = pos > 0
    mask = _seen_before(seq, where, pos[where], num_items=5)
    masked = [{i + 1 for i in row.nonzero().flatten().tolist()} for row in mask]
    assert masked == [
        set(), {3}, {1}, {1, 3}, {1, 2, 3},  # row 0: the target 3 seen before is not masked
        {5}, {4, 5}, {1, 4, 5}, {1, 2, 4, 5}, {1, 2, 3, 5}, {1, 2, 3, 4},  # row 1
    ]


def test_nearest_items_excludes_itself() -> None:
    from training.models.retrieval import nearest_items

    torch.manual_seed(0)
    m = SASRec(SASRecConfig(num_items=40, max_len=5, dim=8, layers=1, heads=1))
    nb = nearest_items(m, k=5, chunk=7)
    assert nb.shape == (41, 5)
    assert all(i not in nb[i].tolist() for i in range(1, 41)) and (nb[1:] >= 1).all()



def _tower(id_dropout: float = 0.0) -> SASRec:
    torch.manual_seed(0)
    attrs = torch.tensor([[0, 0], [1, 2], [1, 0], [0, 0], [3, 1]])  # items 1..4; item 3 has none
    cfg = SASRecConfig(num_items=4, max_len=6, dim=8, layers=1, heads=2, attributes=3,
                       max_attrs=2, id_dropout=id_dropout)
    return SASRec(cfg, attrs)


def test_item_tower_vectors_are_id_plus_attribute_part() -> None:
    m = _tower().eval()
    with torch.no_grad():
        content = m.content_vectors(m.item_attrs)
        assert torch.equal(content[0], torch.zeros(8)) and torch.equal(content[3], torch.zeros(8))
        assert torch.allclose(m.item_vectors(), m.item_emb.weight + content)
        # the attribute part is the same for the same attributes, whatever the item
        assert torch.allclose(m.content_vectors(torch.tensor([[2, 1]])), content[1:2])


def test_id_dropout_drops_the_id_part_of_items_with_attributes_in_training_only() -> None:
    m = _tower(id_dropout=0.9)
    m.train()
    torch.manual_seed(1)
    with torch.no_grad():
        content = m.content_vectors(m.item_attrs)
        table = m.item_table()
        dropped = [i for i in range(1, 5) if torch.allclose(table[i], content[i])]
        assert dropped and 3 not in dropped  # item 3 has no attributes: its ID is all it has
        m.eval()
        assert torch.allclose(m.item_table(), m.item_emb.weight + content)


def test_frozen_copy_serves_the_same_user_vectors_without_the_tower() -> None:
    m = _tower().eval()
    plain = m.frozen()
    seqs = torch.tensor([[0, 0, 1, 2, 3, 4], [0, 0, 0, 0, 4, 1]])
    with torch.no_grad():
        assert plain.attr_emb is None
        assert torch.allclose(plain(seqs), m(seqs), atol=1e-6)
        assert torch.allclose(plain.item_vectors(), m.item_vectors())


def test_a_tower_needs_the_attribute_matrix() -> None:
    with pytest.raises(ValueError, match="item_attrs"):
        SASRec(SASRecConfig(num_items=4, attributes=3, max_attrs=2))


def test_two_tower_is_causal_and_its_last_only_path_matches_the_full_one() -> None:
    from training.models.retrieval import TwoTower, TwoTowerConfig

    torch.manual_seed(0)
    m = TwoTower(TwoTowerConfig(num_items=30, max_len=12, dim=16, hidden=32)).eval()
    seqs = torch.tensor([[0] * 8 + [3, 4, 5, 6], [0] * 10 + [7, 8]])
    with torch.no_grad():
        full = m.hidden(seqs)
        assert full.shape == (2, 12, 16)
        assert torch.allclose(m(seqs), full[:, -1], atol=1e-5)
        assert torch.allclose(m(seqs[:, -4:]), full[:, -1], atol=1e-5)  # padding changes nothing
        later = seqs.clone()
        later[0, -1] = 9
        assert torch.allclose(m.hidden(later)[0, :-1], full[0, :-1], atol=1e-6)
        assert not torch.allclose(m.hidden(later)[0, -1], full[0, -1])
        # no user id: the same items give the same vector, whoever clicked them
        assert torch.allclose(m(torch.tensor([[0, 7, 8]])), m(seqs[1:]), atol=1e-5)


def test_two_tower_with_an_item_tower_freezes_to_the_same_outputs() -> None:
    from training.models.retrieval import TwoTower, TwoTowerConfig

    torch.manual_seed(0)
    attrs = torch.randint(0, 6, (31, 3))
    m = TwoTower(TwoTowerConfig(num_items=30, max_len=12, dim=16, hidden=32, attributes=5,
                                max_attrs=3, id_dropout=0.5), attrs).eval()
    plain = m.frozen()
    seqs = torch.tensor([[0, 0, 3, 4, 5], [0, 0, 0, 7, 8]])
    with torch.no_grad():
        assert plain.attr_emb is None
        assert torch.allclose(plain(seqs), m(seqs), atol=1e-5)
        assert torch.allclose(plain.item_vectors(), m.item_vectors(), atol=1e-6)


@pytest.mark.parametrize("freqs", [0, 3])
def test_bidirectional_attention_lets_earlier_positions_read_later_items(freqs: int) -> None:
    torch.manual_seed(0)
    m = SASRec(SASRecConfig(num_items=30, max_len=12, dim=16, layers=2, heads=2, lowpass=0.5,
                            causal=False, lowpass_freqs=freqs)).eval()
    seqs = torch.tensor([[0] * 8 + [3, 4, 5, 6], [0] * 10 + [7, 8]])
    later = seqs.clone()
    later[0, -1] = 9
    with torch.no_grad():
        full = m.hidden(seqs)
        assert torch.allclose(m(seqs), full[:, -1], atol=1e-5)
        assert torch.allclose(m(seqs[:, -4:]), full[:, -1], atol=1e-5)  # pads are still never read
        changed = m.hidden(later)
    assert not torch.allclose(changed[0, -2], full[0, -2], atol=1e-4)  # an earlier position moved
    assert torch.allclose(changed[1], full[1], atol=1e-6)  # the other row did not


def test_causal_must_be_a_boolean() -> None:
    with pytest.raises(TypeError, match="causal must be true or false"):
        SASRecConfig(num_items=5, causal="no")  # type: ignore[arg-type]


def test_the_lowpass_matrix_keeps_the_lowest_frequencies_of_any_window_up_to_its_size() -> None:
    from training.models.retrieval import lowpass_matrix

    torch.manual_seed(0)
    for n, c in [(12, 3), (12, 7), (11, 6), (50, 5)]:
        P = lowpass_matrix(n, c).double()
        x = torch.randn(n, 4, dtype=torch.float64)
        x[: n // 3] = 0  # a left-padded window
        f = torch.fft.rfft(x, dim=0)
        f[c:] = 0
        assert torch.allclose(P @ x, torch.fft.irfft(f, n=n, dim=0), atol=1e-6)
        L = n - n // 3  # the window cut to its real items reads the matrix's last rows and columns
        assert torch.allclose(P[-L:, -L:] @ x[-L:], (P @ x)[-L:], atol=1e-12)


def test_a_frequency_filter_needs_bidirectional_attention_and_a_frequency_in_range() -> None:
    with pytest.raises(ValueError, match="needs lowpass > 0"):
        SASRecConfig(num_items=5, lowpass_freqs=3, causal=False)
    with pytest.raises(ValueError, match="needs causal = false"):
        SASRecConfig(num_items=5, lowpass=0.5, lowpass_freqs=3)
    with pytest.raises(ValueError, match="from 1 to max_len // 2 \\+ 1 = 6, not 7"):
        SASRecConfig(num_items=5, max_len=10, lowpass=0.5, lowpass_freqs=7, causal=False)


def test_post_norm_normalises_each_residual_sum_and_the_embedding() -> None:
    torch.manual_seed(0)
    cfg = SASRecConfig(num_items=30, max_len=12, dim=16, layers=2, heads=2, lowpass=0.5, norm="post")
    post = SASRec(cfg).eval()
    seqs = torch.tensor([[0] * 8 + [3, 4, 5, 6], [0] * 10 + [7, 8]])
    with torch.no_grad():
        h = post.hidden(seqs)
        real = h[seqs > 0]
        # the last step is a layer norm with its initial scale 1 and shift 0: each real
        # position's state has mean 0 and variance 1 over its dimensions
        assert torch.allclose(real.mean(-1), torch.zeros(len(real)), atol=1e-5)
        assert torch.allclose(real.var(-1, unbiased=False), torch.ones(len(real)), atol=1e-3)
        assert torch.equal(h[seqs == 0], torch.zeros_like(h[seqs == 0]))  # pads stay zero
        pre = SASRec(SASRecConfig(**{**cfg.to_dict(), "norm": "pre"})).eval()
        pre.load_state_dict({k: v for k, v in post.state_dict().items() if k in pre.state_dict()}, strict=False)
        assert not torch.allclose(pre.hidden(seqs), h, atol=1e-3)
    with pytest.raises(ValueError, match="norm must be one of"):
        SASRecConfig(num_items=5, norm="middle")
