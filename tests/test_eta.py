import pytest

from bot.core.eta import EtaEstimator, eta_for_position, finish_etas, size_bucket


def test_default_rate_is_used_before_any_data():
    estimator = EtaEstimator(default_seconds_per_mpx_step=0.5)

    assert estimator.estimate(1000, 1000, 8) == pytest.approx(4.0)


def test_first_record_replaces_the_default():
    estimator = EtaEstimator(default_seconds_per_mpx_step=0.5)
    estimator.record(1024, 1024, 8, seconds=3.0)

    assert estimator.estimate(1024, 1024, 8) == pytest.approx(3.0)


def test_estimate_converges_to_recorded_times():
    estimator = EtaEstimator()
    for _ in range(5):
        estimator.record(1024, 1024, 8, seconds=3.0)
    for _ in range(40):
        estimator.record(1024, 1024, 8, seconds=6.0)

    assert estimator.estimate(1024, 1024, 8) == pytest.approx(6.0, rel=0.01)


def test_estimate_scales_with_steps():
    estimator = EtaEstimator()
    estimator.record(1024, 1024, 8, seconds=4.0)

    assert estimator.estimate(1024, 1024, 16) == pytest.approx(8.0)


def test_size_without_its_own_data_scales_by_pixels_from_the_overall_rate():
    estimator = EtaEstimator()
    estimator.record(1024, 1024, 8, seconds=4.0)

    assert estimator.estimate(512, 512, 8) == pytest.approx(1.0)


def test_each_size_bucket_keeps_its_own_rate():
    estimator = EtaEstimator()
    # Small images pay overhead: per megapixel they are slower than large ones.
    estimator.record(512, 512, 8, seconds=2.0)
    estimator.record(1024, 1024, 8, seconds=4.0)

    assert estimator.estimate(512, 512, 8) == pytest.approx(2.0)
    assert estimator.estimate(1024, 1024, 8) == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("width", "height", "bucket"),
    [(512, 512, 512), (768, 768, 768), (1248, 832, 1024), (1344, 576, 768), (1536, 1536, 1536), (64, 64, 256)],
)
def test_size_bucket_rounds_to_the_nearest_square(width, height, bucket):
    assert size_bucket(width, height) == bucket


def test_invalid_inputs_are_refused():
    estimator = EtaEstimator()
    with pytest.raises(ValueError, match="positive"):
        estimator.record(1024, 1024, 0, seconds=1.0)
    with pytest.raises(ValueError, match="positive"):
        estimator.record(1024, 1024, 8, seconds=0.0)
    with pytest.raises(ValueError, match="smoothing"):
        EtaEstimator(smoothing=0)


def test_finish_time_adds_running_job_jobs_ahead_and_the_job_itself():
    costs = [2.0, 3.0, 5.0]

    assert finish_etas(1.5, costs) == [3.5, 6.5, 11.5]
    assert [eta_for_position(p, 1.5, costs) for p in range(3)] == finish_etas(1.5, costs)


def test_overrun_running_job_counts_as_nearly_done():
    assert eta_for_position(0, running_remaining=-4.0, queued_costs=[2.0]) == 2.0


def test_position_outside_the_queue_is_refused():
    with pytest.raises(ValueError, match="position"):
        eta_for_position(3, 0.0, [1.0, 2.0])
