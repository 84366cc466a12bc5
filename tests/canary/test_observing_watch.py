"""The watch after a promotion, tick by tick (``canary.controller.judging.judge_watch``): a rise of
bad events that the held-back old release shares is not the promoted release's late failure, and
the shared-rise rule's limits, each pinned; a watch whose metrics are down holds its clock."""

from __future__ import annotations

import pytest

from canary.controller import machine as m
from tests.canary.engine_world import World, drive


def test_a_watch_whose_metrics_are_down_holds_its_clock_and_never_passes_blind(tmp_path):
    w, r = watching(tmp_path)  # watched for 600 s
    w.provider.down = True
    for _ in range(70):  # 700 s without a reading: past the watch, but nothing was watched
        w.tick(seconds=10, reader="router/a")
    held = w.get(r)
    assert held.phase == m.WATCHING and held.held_since and "errors: metrics unavailable" in held.reason
    w.provider.down = False
    w.tick(reader="router/a")
    assert "held no more after" in w.get(r).reason
    back_at = w.now
    while w.get(r).phase == m.WATCHING:
        assert w.now - back_at < 1200, "the watch never ended"
        w.provider.serve("importer", "stable", "1.1", 200, 0)
        w.provider.serve("importer", "canary", "1.0", 20, 0)
        w.tick(seconds=10, reader="router/a")
    assert w.get(r).phase == m.SUCCEEDED
    assert w.now - back_at >= 500  # the watch's 600 s counted without the outage


def test_a_rise_the_held_back_old_release_shares_after_promotion_is_not_a_late_failure(tmp_path):
    """A loaded machine or a shared database makes both releases fail more: the change detector's
    absolute rate alone would roll the promoted release back; the held-back old one says it is
    not the release, and the watch goes on (then ends in success once the world is well)."""
    w = World(tmp_path)
    r = w.release(watch=30)
    r = drive(w, r, lambda r: r.phase == m.WATCHING)
    for _ in range(20):  # both releases fail 60% of their requests for 10 s (the floor is 20%)
        w.provider.serve("importer", "stable", "1.1", 200, 120)
        w.provider.serve("importer", "canary", "1.0", 20, 12)
        w.tick(reader="router/a")
        assert w.get(r).phase == m.WATCHING, w.get(r).reason
    watch = w.store.judging(r.id)["last_watch"]["errors"]
    assert "held-back old release's with it" in watch["reason"], watch["reason"]
    done = drive(w, r, lambda r: r.phase not in (m.WATCHING,), stable_release="1.1")
    assert done.phase == m.SUCCEEDED, done.reason


# The shared-rise rule's limits (canary.controller.judging.shared_rise).  In these worlds stable
# had no bad events before promotion, so the change detector's reference rate is the spec's floor,
# 20%; 1.1 is promoted and 1.0 holds back 10%.  Each bin below is one tick: the detector alarms on
# the first, so the rule alone says whether the watch goes on, while the reversed test (relative)
# has too little evidence yet to decide.


def watching(tmp_path) -> tuple[World, m.Rollout]:
    """1.1 promoted and watched for 600 s; the watch's first reading has started its bins."""
    w = World(tmp_path)
    r = drive(w, w.release(watch=600), lambda r: r.phase == m.WATCHING)
    w.tick(reader="router/a")
    return w, r


def watch_bin(w: World, r: m.Rollout, promoted: tuple[int, int], old: tuple[int, int]) -> tuple[m.Rollout, dict]:
    """One tick of (requests, bad) on the promoted release and the held-back old one: the rollout
    after it and the watch's latest answer."""
    w.provider.serve("importer", "stable", "1.1", *promoted)
    w.provider.serve("importer", "canary", "1.0", *old)
    w.tick(reader="router/a")
    return w.get(r), w.store.judging(r.id)["last_watch"]["errors"]


def assert_alarmed_alone(watch: dict) -> None:
    """The change detector fired on a 20% reference; the reversed test did not."""
    detector, rev = watch["evidence"]["change_detector"], watch["evidence"]["reversed"]
    assert detector["reference_rate"] == 0.2 and detector["log_statistic"] >= detector["log_threshold"]
    assert rev["regression"]["e_value"] < rev["regression"]["threshold"], rev


def assert_late_failure_by_the_change_detector(w: World, r: m.Rollout, watch: dict) -> None:
    late = w.get(r)
    assert late.phase == m.ROLLING_BACK and late.decided_by == "judge", late.reason
    assert late.reason.startswith("late failure after promotion: errors: bad rate rose to"), late.reason
    assert late.reason.endswith("change detector fired"), late.reason
    assert m.desired(late).stable_release == "1.0"
    assert_alarmed_alone(watch)


@pytest.mark.parametrize("old_bad", [20, 21])  # of 80: 25% (exactly half of 50%), 26.25%
def test_an_old_release_failing_at_least_half_as_often_shares_the_rise(tmp_path, old_bad):
    w, r = watching(tmp_path)
    now, watch = watch_bin(w, r, promoted=(720, 360), old=(80, old_bad))
    assert now.phase == m.WATCHING, now.reason
    assert f"held-back old release's with it ({old_bad} of 80)" in watch["reason"], watch["reason"]
    assert_alarmed_alone(watch)


def test_an_old_release_failing_just_under_half_as_often_does_not_excuse_the_rise(tmp_path):
    w, r = watching(tmp_path)
    _, watch = watch_bin(w, r, promoted=(720, 360), old=(80, 19))  # 23.75%: 0.475 of 50%, above 20%
    assert_late_failure_by_the_change_detector(w, r, watch)


# the old release fails 50% of its requests, as the promoted one does
@pytest.mark.parametrize(("old", "shared"), [((4, 2), False), ((6, 3), True)], ids=["2 bad", "3 bad"])
def test_the_shared_rise_needs_three_bad_events_on_the_old_release(tmp_path, old, shared):
    w, r = watching(tmp_path)
    now, watch = watch_bin(w, r, promoted=(90, 45), old=old)
    if shared:
        assert now.phase == m.WATCHING, now.reason
        assert f"held-back old release's with it ({old[1]} of {old[0]})" in watch["reason"], watch["reason"]
        assert_alarmed_alone(watch)
    else:
        assert_late_failure_by_the_change_detector(w, r, watch)


@pytest.mark.parametrize(("old_bad", "shared"), [(16, False), (17, True)])  # of 80: 20% (the reference), 21.25%
def test_the_shared_rise_needs_the_old_release_above_the_reference_rate(tmp_path, old_bad, shared):
    w, r = watching(tmp_path)
    now, watch = watch_bin(w, r, promoted=(720, 288), old=(80, old_bad))  # 40%: half of it is 20%
    if shared:
        assert now.phase == m.WATCHING, now.reason
        assert_alarmed_alone(watch)
    else:
        assert_late_failure_by_the_change_detector(w, r, watch)


def test_a_promoted_release_five_times_worse_during_a_shared_rise_is_rolled_back_by_the_reversed_test(tmp_path):
    """Both fail 50% for 4 ticks (a shared rise), then the old release recovers to 10% while the
    promoted one stays at 50%: the reversed test rolls it back while the old release's share since
    promotion is still over half the promoted one's (the change detector's alarm still excused)."""
    w, r = watching(tmp_path)
    for _ in range(4):
        now, watch = watch_bin(w, r, promoted=(360, 180), old=(40, 20))
        assert now.phase == m.WATCHING and "held-back old release's with it" in watch["reason"], now.reason
    for _ in range(6):  # after 6 such ticks the old release's share would still be 104 of 400 (26%)
        now, watch = watch_bin(w, r, promoted=(360, 180), old=(40, 4))
        if now.phase != m.WATCHING:
            break
        assert "held-back old release's with it" in watch["reason"], watch["reason"]
    assert now.phase == m.ROLLING_BACK and now.decided_by == "judge", now.reason
    assert "late failure after promotion: errors: promoted release worse than the held-back old one" in now.reason
    assert m.desired(now).stable_release == "1.0"
    old_n, old_bad = w.store.judging(r.id)["held_back"]["errors"]
    detector = watch["evidence"]["change_detector"]
    old_share, new_share = old_bad / old_n, detector["bad"] / detector["requests"]
    assert old_bad >= 3 and old_share >= 0.5 * new_share and old_share > detector["reference_rate"]
    assert detector["log_statistic"] >= detector["log_threshold"]
