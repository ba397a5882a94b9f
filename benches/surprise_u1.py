"""Baseline for recsift's biased MF: Surprise's SVD on MovieLens 100K split u1.

Trains on u1.base, evaluates on u1.test (predictions clipped to [1, 5], as Surprise does by
default) and prints RMSE and fit time for each configuration. Fit time is the wall time of
`algo.fit(trainset)` only, best and median of `--repeats` runs; RMSE is that of the first run.

    python3 -m venv /work/venv-surprise
    /work/venv-surprise/bin/pip install numpy scikit-surprise
    /work/venv-surprise/bin/python benches/surprise_u1.py --data ../shared/data/ml-100k
"""

import argparse
import statistics
import time
from pathlib import Path

from surprise import SVD, Dataset, Reader, accuracy
from surprise.model_selection import PredefinedKFold

CONFIGS = {
    # Surprise's defaults: 100 factors, lr 0.005, reg 0.02, 20 epochs, init std 0.1.
    "surprise-defaults": {},
    # The tuned configuration of the brief.
    "surprise-tuned": {"n_factors": 100, "lr_all": 0.005, "reg_all": 0.1, "n_epochs": 100},
    # recsift's recommended defaults (sequential SGD here, mini-batches of 1024 in recsift).
    "recsift-defaults-in-surprise": {
        "n_factors": 32,
        "lr_all": 0.02,
        "reg_all": 0.1,
        "n_epochs": 25,
        "init_std_dev": 0.03,
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ml-100k"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    reader = Reader(line_format="user item rating timestamp", sep="\t", rating_scale=(1, 5))
    folds = Dataset.load_from_folds(
        [(str(args.data / "u1.base"), str(args.data / "u1.test"))], reader=reader
    )
    trainset, testset = next(PredefinedKFold().split(folds))

    for name, kwargs in CONFIGS.items():
        times, rmse = [], None
        for _ in range(args.repeats):
            algo = SVD(random_state=0, **kwargs)
            start = time.perf_counter()
            algo.fit(trainset)
            times.append(time.perf_counter() - start)
            if rmse is None:
                rmse = accuracy.rmse(algo.test(testset), verbose=False)
        print(
            f"{name}: {kwargs or 'defaults'}: rmse {rmse:.4f}, "
            f"fit best {min(times):.3f} s, median {statistics.median(times):.3f} s"
        )


if __name__ == "__main__":
    main()
