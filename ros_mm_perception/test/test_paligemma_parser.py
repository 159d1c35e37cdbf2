"""PaliGemma location-answer parser: hand-written malformed cases and property-based tests."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ros_mm_perception.core.models.paligemma_parser import LOC_GRID, parse_detections


def loc(*values):
    return "".join(f"<loc{v:04d}>" for v in values)


def seg(*codes):
    return "".join(f"<seg{c:03d}>" for c in codes)


def expected_box(y0, x0, y1, x1, width, height):
    return (x0 / LOC_GRID * width, y0 / LOC_GRID * height, x1 / LOC_GRID * width,
            y1 / LOC_GRID * height)


def test_each_axis_maps_back_on_its_own():
    width, height = 640, 240
    objs = parse_detections(loc(256, 512, 768, 1000) + " red mug ; " + loc(0, 0, 1023, 1023)
                            + " person",
                            width, height)
    assert [o.label for o in objs] == ["red mug", "person"]
    assert objs[0].box == pytest.approx(expected_box(256, 512, 768, 1000, width, height))
    assert objs[0].grid == (256, 512, 768, 1000)
    assert objs[1].box == pytest.approx(expected_box(0, 0, 1023, 1023, width, height))
    assert all(o.seg_codes == () for o in objs)


def test_reversed_corners_are_put_in_order():
    (obj,) = parse_detections(loc(700, 600, 100, 200) + " door", 100, 50)
    assert obj.grid == (100, 200, 700, 600)
    assert obj.box == pytest.approx(expected_box(100, 200, 700, 600, 100, 50))


@pytest.mark.parametrize("bad", [
    loc(1, 2, 3) + " three locations",
    loc(1, 2, 3, 4, 5) + " five locations",
    "<loc1024><loc0002><loc0300><loc0400> off the grid",
    "<loc9999><loc0002><loc0300><loc0400> off the grid",
    "<loc12><loc0002><loc0300><loc0400> short token",
    loc(10, 20, 10, 400) + " zero height",
    loc(10, 20, 300, 20) + " zero width",
    loc(10, 20, 300, 400),
    loc(10, 20, 300, 400) + "   ",
    loc(10, 20, 300, 400) + seg(*range(15)) + " fifteen codes",
    loc(10, 20, 300, 400) + seg(*range(17)) + " seventeen codes",
    loc(10, 20, 300, 400) + seg(*range(15), 128) + " code off the codebook",
    loc(10, 20) + "<unk>" + loc(300, 400) + " unknown token inside",
])
def test_bad_entry_is_skipped_and_good_neighbours_kept(bad):
    good_a, good_b = loc(100, 100, 200, 200) + " cat", loc(300, 300, 900, 900) + " dog"
    objs = parse_detections(f"{good_a} ; {bad} ; {good_b}", 320, 240)
    assert [o.label for o in objs] == ["cat", "dog"]


@pytest.mark.parametrize("text",
                         ["", "   ", "\n", "no objects here", ";;;", " ; ", "<unk>", "<eos>",
                          "<loc0001", "loc0001 loc0002 loc0003 loc0004 cat", "< > << >>", None])
def test_answers_without_entries_give_nothing(text):
    assert parse_detections(text, 10, 10) == []


def test_stray_text_and_tokens_around_entries():
    text = "sure! here: " + loc(100, 200, 300,
                                400) + " red  mug <unk> trailing ; junk ; <b>" + loc(5, 6, 7,
                                                                                     8) + " cup"
    objs = parse_detections(text, 1024, 1024)
    assert [o.label for o in objs] == ["red mug", "cup"]


def test_entries_without_separator_and_with_spaces_between_tokens():
    text = "<loc0100> <loc0200> <loc0300> <loc0400> cat" + loc(500, 500, 600, 600) + " dog"
    objs = parse_detections(text, 1024, 512)
    assert [(o.label, o.grid) for o in objs] == [("cat", (100, 200, 300, 400)),
                                                 ("dog", (500, 500, 600, 600))]


def test_segmentation_codes_are_read():
    codes = [3, 127, 0, 64] * 4
    (obj,) = parse_detections(loc(10, 20, 300, 400) + seg(*codes) + " cat", 50, 60)
    assert obj.seg_codes == tuple(codes)
    assert obj.label == "cat"


def test_spans_point_at_the_tokens_and_the_label():
    text = "xx " + loc(10, 20, 300, 400) + "  big red mug  ; " + loc(1, 2, 3, 4) + " cup"
    first, second = parse_detections(text, 10, 10)
    assert text[slice(*first.loc_span)] == loc(10, 20, 300, 400)
    assert text[slice(*first.label_span)] == "big red mug"
    assert text[slice(*second.label_span)] == "cup"


def test_image_size_must_be_positive():
    with pytest.raises(ValueError):
        parse_detections(loc(1, 2, 3, 4) + " cat", 0, 10)


# ---- properties ---------------------------------------------------------------------------------

_pieces = st.sampled_from(["<loc", "<seg", ">", "<", ";", " ", "0", "1", "9", "0123", "1023",
                           "1024", "127", "cat", "red mug", "\n", "<unk>", "<loc0005>", "<seg010>",
                           "<loc1023>", "é", "\x00"])
_texts = st.one_of(st.text(max_size=200), st.lists(_pieces, max_size=60).map("".join))


@settings(max_examples=300, deadline=None)
@given(text=_texts, width=st.integers(1, 4000), height=st.integers(1, 4000))
def test_never_raises_and_every_box_is_valid(text, width, height):
    for obj in parse_detections(text, width, height):
        x0, y0, x1, y1 = obj.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert obj.label and obj.label == " ".join(obj.label.split())
        assert len(obj.seg_codes) in (0, 16)


_words = st.sampled_from(["cat", "dog", "red", "mug", "open", "door", "person", "big", "chair"])
_labels = st.lists(_words, min_size=1, max_size=3).map(" ".join)
_coord_pairs = st.tuples(st.integers(0, LOC_GRID - 1),
                         st.integers(0, LOC_GRID - 1)).filter(lambda p: p[0] != p[1])
_entries = st.tuples(_coord_pairs, _coord_pairs, _labels, st.one_of(st.none(), st.lists(
    st.integers(0, 127), min_size=16, max_size=16)))
_junk = st.sampled_from([loc(1, 2, 3) + " short", loc(1, 2, 3, 4, 5) + " long",
                         loc(5, 5, 5, 9) + " flat", "<loc2000><loc0001><loc0002><loc0003> off",
                         loc(1, 2, 3, 4), "words only", ""])


@settings(max_examples=200, deadline=None)
@given(entries=st.lists(st.tuples(_entries, st.lists(_junk, max_size=2)), max_size=6),
       width=st.integers(1, 2000), height=st.integers(1, 2000))
def test_good_entries_survive_any_junk_between_them(entries, width, height):
    parts, want = [], []
    for ((ya, yb), (xa, xb), label, codes), junk in entries:
        parts += junk
        parts.append(loc(ya, xa, yb, xb) + (seg(*codes) if codes else "") + " " + label)
        y0, y1, x0, x1 = min(ya, yb), max(ya, yb), min(xa, xb), max(xa, xb)
        want.append((label, (y0, x0, y1, x1), tuple(codes or ()),
                     expected_box(y0, x0, y1, x1, width, height)))
    objs = parse_detections(" ; ".join(parts), width, height)
    assert [(o.label, o.grid, o.seg_codes) for o in objs] == [w[:3] for w in want]
    for obj, w in zip(objs, want):
        assert obj.box == pytest.approx(w[3])
