import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from streamer.lab.evaluation.nab import list_series, read_series, read_windows, window_labels, write_results
from streamer.lab.evaluation.nab_scoring import (
    MAX_TP,
    PROFILES,
    PUBLISHED_SCOREBOARD,
    REWARD_LOW_FN_RATE,
    REWARD_LOW_FP_RATE,
    STANDARD,
    CorpusScore,
    FileScore,
    Profile,
    ScoredFile,
    format_scoreboard,
    load_results_corpus,
    optimise_threshold,
    perfect_file,
    published_scoreboard,
    scaled_sigmoid,
    score_corpus,
    score_file,
    sweep_thresholds,
)

# Distinct weights so a test cannot pass by mixing them up.
PROFILE = Profile("test", tp_weight=2.0, fp_weight=0.25, fn_weight=3.0)
N_ROWS = 100
WINDOW = (40, 49)  # ten rows
WIDTH = 10


def one_window_file(fired_rows: list[int], probationary: int = 0) -> ScoredFile:
    scores = np.zeros(N_ROWS)
    scores[fired_rows] = 1.0
    return ScoredFile("c/f.csv", scores, (WINDOW,), probationary)


def score(fired_rows: list[int], **kwargs: int) -> FileScore:
    return score_file(one_window_file(fired_rows, **kwargs), PROFILE, 0.5)


def test_profiles_are_nab_cost_matrices() -> None:
    weights = {p.name: (p.tp_weight, p.fp_weight, p.fn_weight) for p in PROFILES}
    assert weights == {"standard": (1.0, 0.11, 1.0), "reward_low_FP_rate": (1.0, 0.22, 1.0),
                       "reward_low_FN_rate": (1.0, 0.11, 2.0)}


def test_scaled_sigmoid_matches_nab_definition() -> None:
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 2.9, 3.0, 3.01])
    expected = [2.0 / (1.0 + math.exp(5.0 * v)) - 1.0 for v in x[:-1]] + [-1.0]
    assert scaled_sigmoid(x) == pytest.approx(expected, abs=1e-12)
    assert abs(MAX_TP - 0.98661) < 1e-5


def test_detection_at_left_edge_earns_the_full_tp_weight() -> None:
    # Unweighted the left edge is S(-1) = 0.98661; NAB's sweeper divides by it, so the
    # reward is exactly tpWeight (which is why the perfect detector scores tpWeight per window).
    assert score([WINDOW[0]]) == FileScore(PROFILE.tp_weight, tp=1, fp=0, fn=0)


def test_detection_at_right_edge_earns_almost_nothing() -> None:
    result = score([WINDOW[1]])
    # NAB's position of the last row is -1/width, not 0.
    assert result.raw == pytest.approx(PROFILE.tp_weight * math.tanh(2.5 / WIDTH) / math.tanh(2.5))
    assert 0.0 < result.raw < 0.25 * PROFILE.tp_weight  # 0.248 for a ten-row window
    assert (result.tp, result.fn) == (1, 0)
    wide = ScoredFile("c/w.csv", np.eye(3000)[2999], ((1000, 2999),), 0)
    assert 0.0 < score_file(wide, PROFILE, 0.5).raw < 0.002 * PROFILE.tp_weight


def test_reward_falls_across_the_window() -> None:
    rewards = [score([row]).raw for row in range(WINDOW[0], WINDOW[1] + 1)]
    assert all(a > b for a, b in itertools.pairwise(rewards))
    middle = score([WINDOW[1] - WIDTH // 2 + 1]).raw  # position -(5 rows to the end) / 10 = -0.5
    assert middle == pytest.approx(PROFILE.tp_weight * 0.84828 / 0.98661, abs=1e-4)


def test_missed_window_costs_fn_weight() -> None:
    assert score([]) == FileScore(-PROFILE.fn_weight, tp=0, fp=0, fn=1)


def test_false_positive_before_any_window_costs_exactly_fp_weight() -> None:
    assert score([WINDOW[0] - 1]) == FileScore(-PROFILE.fp_weight - PROFILE.fn_weight, tp=0, fp=1, fn=1)
    assert score([0, 5, WINDOW[0] - 1]).raw == -3 * PROFILE.fp_weight - PROFILE.fn_weight


def test_false_positive_just_after_a_window_costs_less_than_a_far_one() -> None:
    near = score([WINDOW[1] + 1]).raw + PROFILE.fn_weight
    mid = score([WINDOW[1] + WIDTH]).raw + PROFILE.fn_weight
    far = score([WINDOW[1] + 4 * WIDTH]).raw + PROFILE.fn_weight
    assert near == pytest.approx(-PROFILE.fp_weight * math.tanh(2.5 / (WIDTH - 1)))
    assert -PROFILE.fp_weight < mid < near < 0.0
    assert far == -PROFILE.fp_weight  # more than three widths away: full cost


def test_only_the_first_detection_in_a_window_counts() -> None:
    first_alone = score([WINDOW[0] + 2])
    assert score([WINDOW[0] + 2, WINDOW[0] + 5, WINDOW[1]]) == first_alone
    assert first_alone.tp == 1


def test_every_false_positive_counts() -> None:
    assert score([0, 1, 2]) == FileScore(-3 * PROFILE.fp_weight - PROFILE.fn_weight, tp=0, fp=3, fn=1)


def test_probationary_rows_are_not_scored() -> None:
    # A false positive inside the probationary period costs nothing.
    assert score([3], probationary=10) == score([], probationary=10)
    # A window straddling the boundary: only its rows past the boundary can detect it,
    # and their reward keeps the position in the full window.
    assert score([WINDOW[0]], probationary=WINDOW[0] + 3) == FileScore(-PROFILE.fn_weight, 0, 0, 1)
    assert score([WINDOW[0] + 3], probationary=WINDOW[0] + 3) == score([WINDOW[0] + 3])
    # A window wholly inside the period is not scored at all.
    assert score([], probationary=60) == FileScore(0.0, 0, 0, 0)


def test_scored_file_validates_its_inputs() -> None:
    with pytest.raises(ValueError, match="NaN"):
        ScoredFile("c/f.csv", np.array([0.0, np.nan]), (), 0)
    with pytest.raises(ValueError, match="disjoint"):
        ScoredFile("c/f.csv", np.zeros(10), ((1, 4), (4, 6)), 0)
    with pytest.raises(ValueError, match="disjoint"):
        ScoredFile("c/f.csv", np.zeros(10), ((1, 10),), 0)
    with pytest.raises(ValueError, match="probationary"):
        ScoredFile("c/f.csv", np.zeros(10), (), 11)


def test_from_timestamps_maps_windows_and_probation() -> None:
    stamps = np.arange(200, dtype=np.int64) * 60_000
    file = ScoredFile.from_timestamps("c/f.csv", stamps, np.zeros(200), [(stamps[50], stamps[59])])
    assert file.windows == ((50, 59),)
    assert file.probationary == 30


def small_corpus(seed: int) -> list[ScoredFile]:
    rng = np.random.default_rng(seed)
    files = []
    for i, (n, windows) in enumerate([(300, ((60, 89), (200, 229))), (150, ((100, 114),)), (120, ())]):
        # Coarse scores so thresholds tie across rows and files.
        files.append(ScoredFile(f"c/f{i}.csv", rng.integers(0, 20, n) / 20.0, windows, n * 15 // 100))
    return files


@pytest.mark.parametrize("profile", PROFILES)
def test_perfect_scores_100_and_null_scores_0(profile: Profile) -> None:
    files = small_corpus(1)
    perfect = score_corpus([perfect_file(f) for f in files], [profile])[profile.name]
    null = score_corpus([ScoredFile(f.key, np.zeros_like(f.scores), f.windows, f.probationary)
                         for f in files], [profile])[profile.name]
    assert perfect.normalised == pytest.approx(100.0)
    assert (perfect.tp, perfect.fp, perfect.fn) == (3, 0, 0)
    assert perfect.raw == pytest.approx(3 * profile.tp_weight)
    assert null.normalised == 0.0
    assert null.threshold == math.inf
    assert (null.tp, null.fp, null.fn) == (0, 0, 3)
    assert null.raw == null.null == -3 * profile.fn_weight


def test_optimiser_finds_the_known_best_threshold() -> None:
    # Every window's left edge scores 0.7, rows later in the windows 0.6 (no gain, so
    # the tie goes to the higher threshold), noise outside 0.5, and 0.9 on two rows
    # right before the windows (false positives with no window before them).
    files = []
    for i in range(3):
        scores = np.full(N_ROWS, 0.5)
        scores[WINDOW[0]] = 0.7
        scores[WINDOW[0] + 1 : WINDOW[1] + 1] = 0.6
        scores[[WINDOW[0] - 2, WINDOW[0] - 1]] = 0.9
        files.append(ScoredFile(f"c/f{i}.csv", scores, (WINDOW,), 15))
    result = score_corpus(files, [STANDARD])["standard"]
    assert result.threshold == 0.7
    assert (result.tp, result.fp, result.fn) == (3, 6, 0)
    assert result.raw == pytest.approx(3 * (1.0 - 2 * 0.11))
    # With false positives expensive enough, never firing at 0.9 is not worth it either,
    # but staying silent costs more than the window rewards minus the 0.9 rows.
    costly = Profile("costly", 1.0, 0.6, 1.0)
    assert optimise_threshold(files, costly) == 0.7
    costlier = Profile("costlier", 1.0, 1.1, 1.0)
    assert optimise_threshold(files, costlier) == math.inf


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sweep_agrees_with_direct_scoring_at_every_threshold(seed: int) -> None:
    files = small_corpus(seed)
    for profile in PROFILES:
        sweep = sweep_thresholds(files, profile)
        assert sweep.thresholds[0] == math.inf
        assert (np.diff(sweep.thresholds[1:]) < 0).all()
        for threshold, total in zip(sweep.thresholds, sweep.totals, strict=True):
            direct = sum(score_file(f, profile, float(threshold)).raw for f in files)
            assert total == pytest.approx(direct, abs=1e-9)
        best = optimise_threshold(files, profile)
        assert score_corpus(files, [profile])[profile.name].raw == pytest.approx(float(sweep.totals.max()))
        assert best == sweep.thresholds[int(np.argmax(sweep.totals))]


def test_corpus_without_windows_cannot_be_normalised() -> None:
    with pytest.raises(ValueError, match="no scored window"):
        score_corpus([ScoredFile("c/f.csv", np.zeros(10), (), 1)])


def make_corpus(root: Path) -> None:
    """NAB's layout and formats: `YYYY-MM-DD HH:MM:SS` rows, `.ffffff` window bounds."""
    for key, n_rows in (("artificialTest/a_series.csv", 3), ("realTest/b_series.csv", 10)):
        path = root / "data" / key
        path.parent.mkdir(parents=True)
        rows = "".join(f"2014-04-10 07:{m:02d}:00,{m}\n" for m in range(n_rows))
        path.write_text("timestamp,value\n" + rows)
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps({
        "artificialTest/a_series.csv": [],
        "realTest/b_series.csv": [["2014-04-10 07:02:00.000000", "2014-04-10 07:04:00.000000"],
                                  ["2014-04-10 07:07:00.000000", "2014-04-10 07:07:00.000000"]],
    }))


def test_load_results_corpus_scores_written_results(tmp_path: Path) -> None:
    make_corpus(tmp_path / "nab")
    windows = read_windows(tmp_path / "nab")
    for key in list_series(tmp_path / "nab"):
        series = read_series(tmp_path / "nab", key)
        labels = window_labels(series.timestamps, windows[key])
        write_results(tmp_path / "results", "oracle", series, labels.astype(np.float64), labels)
    files = load_results_corpus(tmp_path / "nab", tmp_path / "results", "oracle")
    assert [f.key for f in files] == ["artificialTest/a_series.csv", "realTest/b_series.csv"]
    assert files[1].windows == ((2, 4), (7, 7))
    assert files[1].probationary == 1
    # The label itself as the score fires on every window row: each window's left edge
    # is found, and the later rows add nothing.
    result = score_corpus(files)
    assert [p.normalised for p in result] == pytest.approx([100.0] * 3)


def test_published_scoreboard_is_sorted_and_bounded() -> None:
    board = published_scoreboard()
    assert board is PUBLISHED_SCOREBOARD
    assert [r.detector for r in board][:2] == ["perfect", "ARTime"]
    assert [r.standard for r in board] == sorted((r.standard for r in board), reverse=True)
    random_row = next(r for r in board if r.detector == "random")
    assert (random_row.standard, random_row.reward_low_fp, random_row.reward_low_fn) == (16.83, 5.76, 25.88)


def test_format_scoreboard_places_our_row_by_standard_score() -> None:
    files = small_corpus(3)
    ours = score_corpus(files)
    table = format_scoreboard({"mine": ours})
    lines = table.splitlines()
    assert lines[0].split() == ["detector", "standard", "low", "FP", "low", "FN"]
    mine = next(i for i, line in enumerate(lines) if line.startswith("* mine"))
    standards = [float(line.split()[-3]) for line in lines[1:]]
    assert standards == sorted(standards, reverse=True)
    printed = [float(cell) for cell in lines[mine].split()[-3:]]
    expected = [ours[p.name].normalised for p in (STANDARD, REWARD_LOW_FP_RATE, REWARD_LOW_FN_RATE)]
    assert printed == pytest.approx(expected, abs=0.005)
    assert len(lines) == len(PUBLISHED_SCOREBOARD) + 2


def test_corpus_score_is_indexed_by_profile_name() -> None:
    result = score_corpus(small_corpus(4))
    assert isinstance(result, CorpusScore)
    assert [p.profile for p in result] == list(PROFILES)
    assert result["standard"] is result.profiles["standard"]
    assert (result.n_files, result.n_windows) == (3, 3)
