"""Train the Fashion-MNIST classifier behind ddpm.metrics (FID_fm) and write its files.

Reproducible: the initialisation, the shuffling and the flips are seeded, and
ddpm's C engine gives the same bits at any thread count, so the same command
writes the same weights.

    PYTHONPATH=. python scripts/train_classifier.py            # the shipped run
    PYTHONPATH=. python scripts/train_classifier.py --epochs 1 --out /tmp/cls

Writes, in --out (default ddpm/weights/):
  fashion-mnist-classifier.safetensors     float32 weights; config, test accuracy,
                                           training settings in the metadata
  fashion-mnist-test-features.safetensors  float64 mu (D,), sigma (D, D) of the
                                           penultimate features of the 10,000 test images
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

import ddpm
from ddpm import metrics


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up to peak, then cosine decay to 0 at `total`."""
    if step <= warmup:
        return peak * step / warmup
    return 0.5 * peak * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--pool", choices=("max", "avg"), default="max",
                    help="2x2 pooling between stages")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--flip", type=float, default=0.5, help="probability of a horizontal flip")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(metrics.WEIGHTS_DIR))
    ap.add_argument("--finalize-from", default=None, metavar="FILE",
                    help="skip training: recompute accuracy, statistics and floor for the "
                         "weights in FILE and write both files (keeps its training metadata)")
    args = ap.parse_args(argv)

    ddpm.set_num_threads(args.threads)
    xtr, ytr = ddpm.datasets.fashion_mnist("train")
    xte, yte = ddpm.datasets.fashion_mnist("test")
    ytr = ytr.astype(np.int64)
    if args.finalize_from:
        net = metrics.FeatureNet.load(args.finalize_from)
        finalize(net, dict(net.metadata), Path(args.out), xtr, xte, yte)
        return 0
    net = metrics.FeatureNet({"pool": args.pool}, seed=args.seed)
    print(f"FeatureNet {net.config}: {net.num_parameters} parameters, "
          f"{net.flops_per_image / 1e6:.1f} MFLOP/image forward", flush=True)
    rng = np.random.default_rng(args.seed)
    n, bs = len(xtr), args.batch_size
    steps_per_epoch = n // bs                      # the last partial batch is dropped
    total = steps_per_epoch * args.epochs
    t_start = time.time()
    history = []
    for epoch in range(1, args.epochs + 1):
        t0 = time.time()
        order = rng.permutation(n)
        flips = rng.random(n) < args.flip
        loss_sum, correct = 0.0, 0
        for k in range(steps_per_epoch):
            idx = order[k * bs:(k + 1) * bs]
            xb = xtr[idx]
            f = flips[idx]
            xb[f] = xb[f][..., ::-1]
            lr = lr_at(net.step + 1, total, args.lr, args.warmup)
            loss, c, _ = net.train_step(xb, ytr[idx], lr=lr, weight_decay=args.weight_decay)
            loss_sum += loss
            correct += c
        train_time = time.time() - t0
        acc = net.accuracy(xte, yte)
        history.append({"epoch": epoch, "loss": loss_sum / steps_per_epoch,
                        "train_acc": correct / (steps_per_epoch * bs), "test_acc": acc,
                        "seconds": train_time})
        print(f"epoch {epoch}: loss {loss_sum / steps_per_epoch:.4f}  train acc "
              f"{correct / (steps_per_epoch * bs):.4f}  test acc {acc:.4f}  "
              f"time {train_time:.0f} s (+{time.time() - t0 - train_time:.0f} s eval)", flush=True)
    total_time = time.time() - t_start
    settings = {k: getattr(args, k) for k in ("epochs", "batch_size", "pool", "lr", "warmup",
                                              "weight_decay", "flip", "seed")}
    settings["optimizer"] = "AdamW(betas=(0.9, 0.999), eps=1e-8), warm-up + cosine lr"
    meta = {"dataset": "Fashion-MNIST (train 60000 / test 10000)",
            "input_range": "[-1, 1]", "feature_layer": "global average pool of the last GN+SiLU",
            "feature_dim": str(net.feature_dim), "training": json.dumps(settings),
            "training_seconds": f"{total_time:.0f}", "history": json.dumps(history),
            "script": "scripts/train_classifier.py"}
    finalize(net, meta, Path(args.out), xtr, xte, yte)
    return 0


def finalize(net, meta: dict, out: Path, xtr, xte, yte) -> None:
    """Test accuracy, the test-set feature statistics and the FID_fm floor; write both files."""
    acc = net.accuracy(xte, yte)
    t0 = time.time()
    mu, sigma = metrics.feature_statistics(xte, net=net)
    t_stats = time.time() - t0
    # the floor: 10,000 real training images (the first 10,000) against the test statistics
    mu_tr, sigma_tr = metrics.feature_statistics(xtr[:10000], net=net)
    floor = metrics.frechet_distance(mu_tr, sigma_tr, mu, sigma)
    meta = dict(meta, test_accuracy=f"{acc:.4f}", fid_train_vs_test=f"{floor:.4f}",
                fid_train_vs_test_images="the first 10000 Fashion-MNIST training images")
    out.mkdir(parents=True, exist_ok=True)
    cls_path = out / metrics.CLASSIFIER_PATH.name
    net.save(cls_path, meta)
    saved = metrics.FeatureNet.load(cls_path)
    if not np.array_equal(saved.params, net.params):
        raise RuntimeError("the saved weights do not read back bit for bit")
    from safetensors.numpy import save_file
    save_file({"mu": mu, "sigma": sigma}, str(out / metrics.TEST_FEATURES_PATH.name),
              metadata={"format": "ddpm-feature-statistics", "images": "Fashion-MNIST test, 10000",
                        "feature_dim": str(mu.shape[0]), "input_range": "[-1, 1]",
                        "classifier": cls_path.name, "covariance": "unbiased (N - 1), float64"})
    for p in out.glob("fashion-mnist-*.safetensors"):
        p.chmod(0o644)
    print(f"test accuracy {acc:.4f}; FID_fm floor (10,000 training images vs test statistics) "
          f"{floor:.4f}; features of 10,000 images in {t_stats:.1f} s; wrote {cls_path} "
          f"({cls_path.stat().st_size} bytes) and {metrics.TEST_FEATURES_PATH.name}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
