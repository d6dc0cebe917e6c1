"""Schedules against hand-computed values; model/data defaults; old config.json files; the new flags."""

import math

import pytest

from jaxseg import cli
from jaxseg.train import TrainConfig
from jaxseg.train.state import make_schedule


def _lr(schedule, **kw):
  return make_schedule(TrainConfig(lr=0.01, schedule=schedule, **kw), total_steps=110)


@pytest.mark.parametrize("t", [0, 5, 10, 37, 60, 109, 110])
def test_schedules_match_their_formulas(t):
  w, lr, T = 10, 0.01, 100  # T: steps after the warm-up
  warm = lambda f: lr * t / w if t < w else f(t - w)
  cases = {
      "constant": warm(lambda s: lr),
      "poly": warm(lambda s: lr * (1 - s / T) ** 0.9),
      "cosine": warm(lambda s: lr * (1 + math.cos(math.pi * s / T)) / 2),
  }
  for name, want in cases.items():
    assert float(_lr(name, warmup_steps=w)(t)) == pytest.approx(want, rel=1e-5, abs=1e-9), name
  got = float(_lr("exponential", warmup_steps=0, decay_rate=0.5, decay_steps=20)(t))
  assert got == pytest.approx(lr * 0.5 ** (t / 20), rel=1e-5)


def test_defaults_depend_on_model_and_data():
  unet = TrainConfig(model="unet_small", data="folder:/x").resolved()
  assert (unet.epochs, unet.augment, unet.schedule, unet.warmup_steps, unet.normalize) == (
      30, "default", "cosine", 50, "zscore-foreground")
  lab = TrainConfig().resolved()
  assert (lab.epochs, lab.augment, lab.schedule, lab.warmup_steps, lab.normalize) == (
      10, "none", "exponential", 0, "div1024")
  given = TrainConfig(model="unet_small", epochs=3, augment="none").resolved()
  assert (given.epochs, given.augment) == (3, "none")


def test_old_config_json_is_readable_and_keeps_its_meaning():
  old = {"model": "cnn3", "data": "folder:/d", "epochs": 2, "augment": True, "lr": 1e-3, "decay_rate": 1.0}
  c = TrainConfig.from_dict(old)
  assert (c.augment, c.schedule, c.warmup_steps, c.normalize) == ("light", "exponential", 0, "zscore-slice")
  c = TrainConfig.from_dict({"model": "unet_small", "data": "synthetic", "augment": False})
  assert (c.augment, c.schedule, c.normalize, c.resolved().epochs) == ("none", "exponential", "div1024", 30)
  # a resumed old run compares equal to the same flags given explicitly
  c.check_resumable(TrainConfig(model="unet_small", data="synthetic", augment="none", schedule="exponential",
                                warmup_steps=0, normalize="div1024"), "w")


def test_augment_flag_alone_means_default():
  args = cli.build_parser("train").parse_args(["train", "--augment"])
  assert args.augment == "default"
  args = cli.build_parser("train").parse_args(["train", "--augment", "heavy", "--schedule", "poly"])
  assert (args.augment, args.schedule) == ("heavy", "poly")


@pytest.mark.parametrize("argv, needle", [
    (["--augment", "wild"], "--augment"),
    (["--schedule", "step"], "--schedule"),
    (["--normalize", "zscore"], "--normalize"),
    (["--warmup-steps", "-1"], "--warmup-steps"),
    (["--data-workers", "-2"], "--data-workers"),
])
def test_bad_new_flags_are_one_line_exit_2(tmp_path, capsys, argv, needle):
  status = cli.main(["train", "--model", "cnn3", "--data", "synthetic:4,2,32", "--workdir", str(tmp_path / "w"),
                     *argv])
  err = capsys.readouterr().err
  assert status == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
  assert not (tmp_path / "w").exists()
