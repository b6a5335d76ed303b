"""Inspection: sample grid, Monte-Carlo dropout, pairwise distances and k-NN, predicting a user's pictures."""

import re

import matplotlib.image
import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, ft, write_course_npz


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained briefly on tiny learnable digits."""
    root = tmp_path_factory.mktemp("inspect")
    data = write_course_npz(root / "d", n_train=400, n_test=60, shards=2)
    # 4 epochs: after 3 (36 steps) the 20 validation images scored 100 % with one thread, 80 % with two
    assert ft.main(["train", f"--data_dir={data}", f"--out={root / 'run'}", "--epochs=4", "--batch_size=32"]) == 0
    assert ft.Checkpoint.load(root / "run" / "best.pt").metrics["best_val_accuracy"] >= 0.9  # it learned: far above chance
    return data, root / "run" / "best.pt"


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """A model trained for three epochs on the bundled sample's real (turned) digits, for pictures a user would take."""
    root = tmp_path_factory.mktemp("digits")
    assert ft.main(["train", f"--data_dir={ft.SAMPLE_DATA_DIR}", f"--out={root / 'run'}", "--epochs=3", "--batch_size=128"]) == 0
    assert ft.Checkpoint.load(root / "run" / "best.pt").metrics["best_val_accuracy"] >= 0.85
    return root / "run" / "best.pt"


def test_show_draws_n_labelled_panels(cli, tiny_data, tmp_path, figures):
    code, out, err = cli("show", f"--data_dir={tiny_data}", "--n=7", "--out=grid.png")
    assert code == 0, err
    assert out.strip() == "wrote grid.png (7 images)" and (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
    panels = [ax for ax in figures[0].axes if ax.images]
    assert len(panels) == 7
    labels = np.load(tiny_data / "train_0.npz")["labels"][:7]
    assert [ax.get_title() for ax in panels] == [str(v) for v in labels]


def test_show_with_checkpoint_marks_wrong_predictions_in_red(cli, trained, figures):
    data, ckpt = trained
    code, out, err = cli("show", f"--data_dir={data}", "--split=test", "--n=30", f"--checkpoint={ckpt}")
    assert code == 0, err
    wrong = int(re.search(r"(\d+) wrong", out).group(1))
    panels = [ax for ax in figures[0].axes if ax.images]
    red = [ax for ax in panels if ax.title.get_color() == "red"]
    assert len(panels) == 30 and len(red) == wrong and all("→" in ax.get_title() for ax in panels)
    labels = np.load(data / "test.npz")["labels"][:30]
    shown = [ax.get_title().split(" → ") for ax in panels]
    assert [int(true) for true, _ in shown] == labels.tolist()
    assert wrong <= 6 and sum(true != predicted for true, predicted in shown) == wrong  # learned (chance: 27 wrong), marked truly


def test_mc_dropout_histogram_counts_sum_to_samples(cli, trained, tmp_path, figures):
    data, ckpt = trained
    code, out, err = cli("mc_dropout", str(ckpt), f"--data_dir={data}", "--index=3", "--samples=57", "--out=mc.png")
    assert code == 0, err
    assert (tmp_path / "mc.png").is_file() and "predictive entropy" in out
    hist = figures[0].axes[1]
    assert sum(p.get_height() for p in hist.patches) == 57
    mean = [p.get_height() for p in figures[0].axes[2].patches]
    assert abs(sum(mean) - 1) < 1e-4
    label = int(np.load(data / "test.npz")["labels"][3])
    assert out.startswith(f"test image 3 (label {label}): {label} with mean p=")  # the learned model's answer is the digit
    assert int(np.argmax(mean)) == label
    entropy = float(re.search(r"entropy ([\d.]+)", out).group(1))
    shown = np.array(mean)  # the entropy said is that of the mean probabilities drawn, to its three decimals
    assert entropy == pytest.approx(float(-(shown * np.log(np.clip(shown, 1e-12, None))).sum()), abs=6e-4)
    # seeded: the same command gives the same line
    assert (
        cli("mc_dropout", str(ckpt), f"--data_dir={data}", "--index=3", "--samples=57", "--out=mc2.png")[1].split("plot:")[0]
        == out.split("plot:")[0]
    )


def test_mc_dropout_varies_with_dropout_on_and_keeps_batch_norm_in_eval(trained):
    _, ckpt = trained
    model = ft.Checkpoint.load(ckpt).model()
    assert ft.enable_mc_dropout(model) == 1
    assert all(not m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    x = torch.rand(1, 1, 28, 28).expand(20, 1, 28, 28)
    with torch.no_grad():
        out = model(x)
    assert out.std(0).max() > 1e-4  # passes differ
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x).std(0), torch.zeros(10), atol=1e-5)


def test_mc_dropout_mistakes(cli, trained, tmp_path):
    data, ckpt = trained
    state = torch.load(ckpt, weights_only=True)
    state["model_config"]["dropout"] = 0.0
    torch.save(state, tmp_path / "nodrop.pt")
    assert_one_line_error(*cli("mc_dropout", str(tmp_path / "nodrop.pt"), f"--data_dir={data}")[::2], "no dropout")
    assert_one_line_error(*cli("mc_dropout", str(ckpt), f"--data_dir={data}", "--samples=0")[::2], "--samples", exit_code=2)
    assert_one_line_error(*cli("mc_dropout", str(ckpt), f"--data_dir={data}", "--index=60")[::2], "--index", exit_code=2)


def test_pairwise_sq_dist_matches_the_naive_difference_form():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(37, 11, generator=g, dtype=torch.float64), torch.randn(23, 11, generator=g, dtype=torch.float64)
    naive = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    assert torch.allclose(ft.pairwise_sq_dist(a, b, chunk=5), naive)
    same = ft.pairwise_sq_dist(a.float(), a.float())
    assert same.min() >= 0 and torch.allclose(same.diagonal(), torch.zeros(37), atol=1e-4)


def test_knn_agrees_with_brute_force_and_the_cli_reports_accuracy(cli, tiny_data):
    g = torch.Generator().manual_seed(1)
    train_x, test_x = torch.rand(50, 6, generator=g), torch.rand(13, 6, generator=g)
    train_y = torch.randint(0, 4, (50,), generator=g)
    nearest = ((test_x[:, None] - train_x[None]) ** 2).sum(-1).argsort(1)[:, :1]
    assert torch.equal(ft.knn_predict(train_x, train_y, test_x, 1, 4, chunk=4), train_y[nearest[:, 0]])
    code, out, err = cli("knn", f"--data_dir={tiny_data}", "--k=3")
    assert code == 0, err
    assert re.fullmatch(r"3-NN \(pixel space\) test accuracy: \d+\.\d\d% \(\d+/50\) in [\d.]+s\n", out)
    assert_one_line_error(*cli("knn", f"--data_dir={tiny_data}", "--k=0")[::2], "--k", exit_code=2)


def test_mnist_style_crops_scales_and_centres_by_mass():
    picture = torch.ones(100, 60)  # dark ink on a light page, off-centre
    picture[10:70, 5:25] = 0
    out = ft.mnist_style(picture)
    assert out.shape == (1, 28, 28)
    rows, cols = torch.nonzero(out[0] > 0.5, as_tuple=True)
    assert rows.max() - rows.min() + 1 <= 20 and cols.max() - cols.min() + 1 <= 20
    mass = out[0].sum()
    cy = (out[0].sum(1) * torch.arange(28)).sum() / mass
    cx = (out[0].sum(0) * torch.arange(28)).sum() / mass
    assert abs(cy - 13.5) < 1 and abs(cx - 13.5) < 1


def test_predict_names_the_digits_of_pictures_and_refuses_non_images(cli, digits_model, tmp_path):
    test = np.load(ft.SAMPLE_DATA_DIR / "test.npz")
    firsts = [int(np.flatnonzero(test["labels"] == d)[0]) for d in range(10)]  # the first test digit of each class
    names = []
    for digit, i in enumerate(firsts):
        page = 255 - np.kron(test["images"][i], np.ones((5, 5), np.uint8))  # dark ink on a light page, 140×140
        matplotlib.image.imsave(tmp_path / f"digit{digit}.png", page, cmap="gray", vmin=0, vmax=255)
        names.append(f"digit{digit}.png")
    matplotlib.image.imsave(tmp_path / "digit0.jpg", np.stack([page] * 3, -1))  # a colour JPEG of the 9
    code, out, err = cli("predict", str(digits_model), *names, "digit0.jpg")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 11
    right = 0
    for name, line in zip([*names, "digit0.jpg"], lines):
        match = re.fullmatch(rf"{name}: (\d) ([\d.]+)%, (\d) ([\d.]+)%, (\d) ([\d.]+)%", line)
        assert match, line
        probs = [float(match.group(i)) for i in (2, 4, 6)]
        assert probs == sorted(probs, reverse=True)
        right += match.group(1) == (name[5] if name.endswith(".png") else "9")
    assert right >= 9, out  # the photographed digits are named: 11 pictures, at most 2 wrong
    (tmp_path / "notes.png").write_text("not a picture")
    assert_one_line_error(*cli("predict", str(digits_model), "notes.png")[::2], "notes.png", "not a readable image")
    assert_one_line_error(*cli("predict", str(digits_model))[::2], "needs picture files", exit_code=2)


def test_show_wrong_draws_the_first_misclassified_test_digits(cli, digits_model, figures):
    code, out, err = cli("show", f"--checkpoint={digits_model}", f"--data_dir={ft.SAMPLE_DATA_DIR}", "--split=test", "--wrong", "--n=9")
    assert code == 0, err
    data = ft.load_data("corruptedmnist", str(ft.SAMPLE_DATA_DIR), train=False)
    model = ft.Checkpoint.load(digits_model).model()
    predicted = ft.predict_logits(model, data.test_images, torch.device("cpu")).argmax(1)
    missed = (predicted != data.test_labels).nonzero().flatten()[:9]
    assert len(missed) == 9  # a three-epoch model misses more than 9 of the sample's 1,000 test digits
    panels = [ax for ax in figures[0].axes if ax.images]
    assert [ax.get_title() for ax in panels] == [f"{data.test_labels[i]} → {predicted[i]}" for i in missed.tolist()]
    assert all(np.array_equal(ax.images[0].get_array(), data.test_images[i, 0].numpy()) for ax, i in zip(panels, missed.tolist()))
    assert all(ax.title.get_color() == "red" for ax in panels) and out.strip().endswith("(9 images, 9 wrong)")
    assert "misclassified" in figures[0]._suptitle.get_text()


def test_show_wrong_needs_a_checkpoint(cli):
    code, _, err = cli("show", "--wrong")
    assert_one_line_error(code, err, "--wrong needs --checkpoint", exit_code=2)
