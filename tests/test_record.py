"""The one run record and the one summary over seeds."""

import numpy as np

from convae_jax.record import DDOF, mean_std, record_line, run_record


def test_mean_std_is_the_sample_standard_deviation():
    # 1, 2, 3, 4: mean 2.5, squared deviations sum to 5; ddof 1 gives sqrt(5/3), ddof 0 sqrt(5/4).
    summary = mean_std([1.0, 2.0, 3.0, 4.0])
    assert DDOF == 1
    np.testing.assert_allclose(summary["mean"], 2.5, rtol=0, atol=1e-15)
    np.testing.assert_allclose(summary["std"], np.sqrt(5.0 / 3.0), rtol=1e-15)
    assert mean_std([0.7]) == {"mean": 0.7, "std": 0.0}


def test_run_record_names_the_command_machine_and_versions():
    record = run_record(program=("python", "-m", "benchmarks.accuracy"), argv=["--dataset", "coat"])
    assert record["command"] == "python -m benchmarks.accuracy --dataset coat"
    assert record["cores"] >= 1 and record["cpu"]
    assert {"python", "jax", "flax", "numpy"} <= set(record["versions"])
    line = record_line(record)
    assert line.startswith(f"{record['cpu']} ({record['cores']} cores); versions: ")
