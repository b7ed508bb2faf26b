"""VADER offline: the README's published compounds, sentence averaging, and the local-model hook."""
import numpy as np
import pytest

from helpers.text import sentiment


def test_vader_readme_compounds():
    assert sentiment.vader_compound("VADER is smart, handsome, and funny.") == pytest.approx(0.8316, abs=1e-4)
    assert sentiment.vader_compound("VADER is not smart, handsome, nor funny.") == pytest.approx(-0.7424, abs=1e-4)
    # one sentence: the sentence mean is VADER's own score
    s = sentiment.score(["VADER is smart, handsome, and funny.", "VADER is not smart, handsome, nor funny."])
    assert s == pytest.approx([0.8316, -0.7424], abs=1e-4)


def test_sentence_mean_does_not_saturate():
    long = " ".join(["I love this, it is great!"] * 10 + ["It is terrible and awful."] * 10)
    whole = sentiment.vader_compound(long)
    mean = sentiment.vader_sentence_mean(long)
    assert abs(whole) > 0.9          # whole-text compound saturates
    assert abs(mean) < 0.3           # half positive, half negative sentences average near zero
    assert sentiment.vader_sentence_mean("") == 0.0


def test_local_model_hook_with_stand_in():
    calls = []

    def stand_in(texts):
        calls.append(len(texts))
        return [0.5 if "good" in t else -0.5 for t in texts]

    out = sentiment.score(["good day", "bad day", "good"], model=stand_in, batch_size=2)
    assert np.allclose(out, [0.5, -0.5, 0.5]) and calls == [2, 1]
    with pytest.raises(ValueError, match="returned 1 values for 2 texts"):
        sentiment.score(["a", "b"], model=lambda t: [0.1])
    with pytest.raises(ValueError, match="not a finite number in"):
        sentiment.score(["a"], model=lambda t: [3.0])
