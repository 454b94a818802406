import shutil

import numpy as np
import pytest
from conftest import DATA, make_folder
from hypothesis import given, settings
from hypothesis import strategies as st

from gmatch.data import DataError, load_movielens
from gmatch.text import TrainOnlyTfidf, clean_text, strip_boilerplate


def test_course_data_loads():
    ms = load_movielens(DATA)
    assert len(ms) == 2938
    assert len(ms.train_idx) == 1762 and len(ms.heldout_idx) == 1176
    assert np.all(np.diff(ms.ids) > 0)  # sorted by id
    assert ms.poster_paths[0].stem == str(ms.ids[0])


def test_folder_without_train_txt_is_all_test(tmp_path):
    ms = load_movielens(make_folder(tmp_path / "d", n=10, train=False))
    assert len(ms) == 10 and len(ms.train_idx) == 0 and len(ms.heldout_idx) == 10


def test_subset_keeps_train_flags(tiny_dir):
    ms = load_movielens(tiny_dir)
    idx = np.random.default_rng(0).permutation(len(ms))
    sub = ms.subset(idx)
    assert np.array_equal(sub.is_train, ms.is_train[idx])
    assert sub.intros[0] == ms.intros[idx[0]]


@pytest.fixture
def broken(tmp_path):
    return make_folder(tmp_path / "d", n=12, n_train=8)


def _rewrite_info(folder, fn):
    lines = (folder / "info.csv").read_text(encoding="utf-8").splitlines()
    (folder / "info.csv").write_text("\n".join(fn(lines)) + "\n", encoding="utf-8")


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        load_movielens(tmp_path / "nope")


def test_missing_column(broken):
    _rewrite_info(broken, lambda ls: [ls[0].replace("intro", "plot")] + ls[1:])
    with pytest.raises(DataError, match=r"info.csv: missing column\(s\) \['intro'\]"):
        load_movielens(broken)


def test_duplicate_id(broken):
    _rewrite_info(broken, lambda ls: ls + [ls[1]])
    with pytest.raises(DataError, match="duplicate id 1"):
        load_movielens(broken)


def test_empty_intro(broken):
    def blank(ls):
        ls.append('1000000,Nothing (2000),Drama,"",X,Y,2000')
        return ls

    _rewrite_info(broken, blank)
    shutil.copyfile(broken / "poster" / "1.jpg", broken / "poster" / "1000000.jpg")
    with pytest.raises(DataError, match=r"row 14 \(id 1000000\): empty intro"):
        load_movielens(broken)


def test_non_utf8_info(broken):
    raw = (broken / "info.csv").read_bytes().replace(b"cowboy", b"cowb\xffy")
    (broken / "info.csv").write_bytes(raw)
    with pytest.raises(DataError, match="line 2 is not valid UTF-8"):
        load_movielens(broken)


def test_zero_byte_poster(broken):
    (broken / "poster" / "2.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"2\.jpg: poster file is empty"):
        load_movielens(broken)


@pytest.mark.parametrize(
    "content, message",
    [
        ("0\n1\nabc\n", r"train.txt:3: 'abc' is not an integer"),
        ("0\n12\n", r"train.txt:2: position 12 out of range \[0, 12\)"),
        ("0\n1\n0\n", r"train.txt:3: position 0 duplicates line 1"),
        ("0\n\n1\n", r"train.txt:2: blank line"),
        ("-1\n", r"position -1 out of range"),
    ],
)
def test_bad_train_txt(broken, content, message):
    (broken / "train.txt").write_text(content)
    with pytest.raises(DataError, match=message):
        load_movielens(broken)


def test_trailing_blank_lines_are_fine(broken):
    (broken / "train.txt").write_text("0\n3\n\n\n")
    assert load_movielens(broken).train_idx.tolist() == [0, 3]


def test_boilerplate_and_cleaning():
    assert strip_boilerplate("A man fights. ... See full summary »") == "A man fights."
    assert strip_boilerplate("A man fights.See full summary »") == "A man fights."
    assert clean_text("The Dogs, running!", stopwords=True, lemmatize=True) == "dog running"


def test_tfidf_sees_training_intros_only():
    ms = load_movielens(DATA)
    train = [ms.intros[i] for i in ms.train_idx[:400]]
    a = TrainOnlyTfidf(dim=32).fit(train)
    b = TrainOnlyTfidf(dim=32).fit(train)
    assert a.n_fit_texts == 400
    vocab = a.vectorizer.vocabulary_
    held = [ms.intros[i] for i in ms.heldout_idx[:50]]
    assert np.allclose(a.transform(held), b.transform(held))

    # Words that only held-out intros use (in >= 2 of them, so min_df would keep
    # them) are not in the vocabulary; fitting on held-out intros too adds them.
    def words(texts):
        return [set(a._docs([t])[0].split()) for t in texts]

    seen = set().union(*words(train))
    counts: dict = {}
    for ws in words([ms.intros[i] for i in ms.heldout_idx]):
        for w in ws - seen:
            counts[w] = counts.get(w, 0) + 1
    only_heldout = {w for w, c in counts.items() if c >= 2}
    assert len(only_heldout) > 20
    assert not only_heldout & set(vocab)
    leaky = TrainOnlyTfidf(dim=0, max_features=0).fit(
        train + [ms.intros[i] for i in ms.heldout_idx]
    )
    assert only_heldout & set(leaky.vectorizer.vocabulary_)  # negative control


@settings(max_examples=60, deadline=None)
@given(
    lines=st.lists(
        st.one_of(
            st.integers(-5, 30).map(str),
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=4),
        ),
        max_size=25,
    )
)
def test_property_train_txt_parses_or_explains(tmp_path_factory, lines):
    from gmatch.data import read_train_positions

    path = tmp_path_factory.mktemp("t") / "train.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        pos = read_train_positions(path, 25)
    except DataError as e:
        assert str(path) in str(e)  # every refusal names the file (and line)
        return
    # Accepted: sorted, unique, in range, one per non-blank line.
    assert list(pos) == sorted(set(pos.tolist())) and all(0 <= p < 25 for p in pos)
    assert len(pos) == len([line for line in lines if line.strip()])
