"""Text cleaning and train-only TF-IDF."""

from __future__ import annotations

import re
import string

import numpy as np

__all__ = ["strip_boilerplate", "clean_text", "split_sentences", "TrainOnlyTfidf"]

_BOILERPLATE = re.compile(r"\s*(\.\.\.)?\s*See full summary\s*»?\s*$", re.IGNORECASE)
_PUNCT = str.maketrans({c: " " for c in string.punctuation + "«»“”‘’—–"})


def strip_boilerplate(text: str) -> str:
    """Drop the trailing "See full summary »" that truncated IMDb intros carry."""
    return _BOILERPLATE.sub("", text).strip()


_SENTENCE_END = re.compile(
    r"(?<!\bMr\.)(?<!\bMrs\.)(?<!\bMs\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\bJr\.)(?<!\bvs\.)"
    r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]*[A-Z0-9])"
)


def split_sentences(text: str, min_chars: int = 3) -> list[str]:
    """Sentences of an intro (after the boilerplate is stripped): split after
    ``.``, ``!`` or ``?`` followed by a capitalised word; fragments shorter than
    ``min_chars`` are dropped."""
    parts = _SENTENCE_END.split(strip_boilerplate(text))
    return [p.strip() for p in parts if len(p.strip()) >= min_chars]


def _lemma(word: str) -> str:
    # A light suffix lemmatiser (no WordNet download is possible offline).
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 2 and not word.endswith("ss"):
            return word[: -len(suffix)] + repl
    return word


def clean_text(
    text: str,
    lowercase: bool = True,
    strip_punct: bool = True,
    stopwords: bool = False,
    lemmatize: bool = False,
) -> str:
    """Course-style cleaning: boilerplate, case, punctuation, stop words, plurals."""
    text = strip_boilerplate(text)
    if lowercase:
        text = text.lower()
    if strip_punct:
        text = text.translate(_PUNCT)
    words = text.split()
    if stopwords:
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        words = [w for w in words if w.lower() not in ENGLISH_STOP_WORDS]
    if lemmatize:
        words = [_lemma(w) for w in words]
    return " ".join(words)


class TrainOnlyTfidf:
    """TF-IDF (+ optional SVD to ``dim``) whose vocabulary and IDF see training intros only.

    The API enforces the SPEC's rule: :meth:`fit` takes the training texts and
    nothing else; :meth:`transform` may then embed any text (test intros, OCR).

    ``analyzer="word"`` (default): word uni+bigrams of cleaned, stop-worded,
    lemmatised text. ``analyzer="char_wb"``: character 3-5-grams inside word
    boundaries, which survive OCR misreadings ("8atman" still shares "atma",
    "tman"); use it with ``dim=0`` and :meth:`transform_sparse` (an SVD throws
    away most of what makes it match).
    """

    def __init__(
        self,
        dim: int = 256,
        min_df: int = 2,
        max_features: int = 20000,
        seed: int = 0,
        analyzer: str = "word",
    ):
        if analyzer not in ("word", "char_wb"):
            raise ValueError(
                f"TrainOnlyTfidf: analyzer must be 'word' or 'char_wb', not {analyzer!r}"
            )
        self.dim, self.min_df, self.max_features, self.seed = dim, min_df, max_features, seed
        self.analyzer = analyzer
        self.n_fit_texts = 0

    def _vectorizer(self):
        from sklearn.feature_extraction.text import TfidfVectorizer

        ngrams = (1, 2) if self.analyzer == "word" else (3, 5)
        return TfidfVectorizer(
            min_df=self.min_df,
            max_features=self.max_features or None,
            sublinear_tf=True,
            ngram_range=ngrams,
            analyzer=self.analyzer,
            dtype=np.float32,
        )

    def _docs(self, texts: list[str]) -> list[str]:
        if self.analyzer == "word":
            return [clean_text(t, stopwords=True, lemmatize=True) for t in texts]
        return [clean_text(t) for t in texts]

    @staticmethod
    def _canonical(docs: list[str]) -> list[str]:
        return sorted(docs)

    def fit(self, train_texts: list[str]) -> TrainOnlyTfidf:
        from sklearn.decomposition import TruncatedSVD

        # Documents in a canonical order (sorted), so the fit depends on the set of
        # training intros, not on their order: the randomized SVD's basis otherwise moves
        # with the row order (193 of 256 components changed under a shuffle).
        docs = self._canonical(self._docs(train_texts))
        self.vectorizer = self._vectorizer()
        X = self.vectorizer.fit_transform(docs)
        self.components = None  # [dim x vocab] SVD basis; None = raw TF-IDF
        if self.dim and self.dim < X.shape[1]:
            svd = TruncatedSVD(self.dim, random_state=self.seed).fit(X)
            self.components = svd.components_.astype(np.float32)  # as stored in checkpoints
        self.n_fit_texts = len(docs)
        return self

    def transform_sparse(self, texts: list[str]):
        """Raw TF-IDF rows (scipy CSR, float32, L2-normalised; an empty text is a zero row)."""
        return self.vectorizer.transform(self._docs(texts)).tocsr()

    def transform(self, texts: list[str], sparse: bool = False):
        """Rows of ``texts``: the SVD-reduced dense rows [N x dim] (float32), or with
        ``sparse`` the raw TF-IDF rows (:meth:`transform_sparse`)."""
        X = self.transform_sparse(texts)
        if sparse:
            return X
        out = X @ self.components.T if self.components is not None else X.toarray()
        return np.asarray(out, dtype=np.float32)

    def state_dict(self) -> dict:
        """Everything needed to transform later, as tensors and plain lists
        (stored in checkpoints, loadable with ``weights_only=True``)."""
        import torch

        if getattr(self, "_state", None) is None:  # one object, so torch.save stores it once
            vocab = sorted(self.vectorizer.vocabulary_, key=self.vectorizer.vocabulary_.get)
            comps = self.components
            self._state = {
                "vocab": vocab,
                "idf": torch.from_numpy(self.vectorizer.idf_.astype(np.float64)),
                "components": None if comps is None else torch.from_numpy(comps),
                "n_fit_texts": self.n_fit_texts,
                "params": [self.dim, self.min_df, self.max_features, self.seed, self.analyzer],
            }
        return self._state

    @classmethod
    def from_state(cls, state: dict) -> TrainOnlyTfidf:
        self = cls(*state["params"])
        self.vectorizer = self._vectorizer()
        self.vectorizer.vocabulary_ = {w: i for i, w in enumerate(state["vocab"])}
        self.vectorizer.idf_ = state["idf"].numpy()
        comps = state["components"]
        self.components = None if comps is None else comps.numpy()
        self.n_fit_texts = state["n_fit_texts"]
        return self
