"""x2i_core.media: images, sampled video frames and audio, and one-line InputErrors naming the file."""
import numpy as np
import pytest
from PIL import Image

from x2i_core.errors import InputError
from x2i_core.media import load_audio, load_image, sample_video, sample_video_frames, video_frame_indices
from x2i_core.testing import write_test_video, write_test_wav


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    Image.new("L", (20, 10), 128).save(root / "gray.png")
    (root / "corrupt.png").write_bytes(np.random.default_rng(0).bytes(300))
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(1).bytes(3000))
    return {
        "root": root,
        "video": write_test_video(root / "clip.mp4", num_frames=12, fps=4),  # 3 seconds
        "wav": write_test_wav(root / "tone.wav", seconds=0.5, sampling_rate=8000, channels=2),
    }


def _one_line_naming(err, path):
    text = str(err.value)
    assert "\n" not in text and str(path) in text


def test_load_image_from_path_pil_and_array(media):
    image = load_image(media["root"] / "gray.png")
    assert image.mode == "RGB" and image.size == (20, 10)
    assert load_image(Image.new("RGBA", (3, 4))).mode == "RGB"
    assert load_image(np.zeros((4, 5, 3), np.uint8)).size == (5, 4)


@pytest.mark.parametrize("name, match", [("missing.png", "not found"), ("corrupt.png", "cannot read image")])
def test_bad_image_is_input_error(media, name, match):
    path = media["root"] / name
    with pytest.raises(InputError, match=match) as err:
        load_image(path)
    _one_line_naming(err, path)


def test_video_sampled_at_about_one_fps(media):
    frames, rate = sample_video(media["video"])
    assert len(frames) == 3 and rate == pytest.approx(1.0)
    assert all(f.mode == "RGB" and f.size == (64, 48) for f in frames)
    # distinct frames, in time order: each written frame has its own flat colour
    assert len({np.asarray(f)[24, 32].tobytes() for f in frames}) == 3
    assert len(sample_video_frames(media["video"], fps=4.0, max_frames=5)) == 5


def test_frame_indices_even_and_capped():
    assert video_frame_indices(300, 30.0, fps=1.0, max_frames=16) == [15 + 30 * i for i in range(10)]
    capped = video_frame_indices(3000, 30.0, fps=1.0, max_frames=16)  # 100 s -> 16 frames spread over it
    assert len(capped) == 16 and capped[0] < 200 and capped[-1] > 2800
    assert video_frame_indices(5, 30.0) == [2]  # shorter than a second: still one frame
    assert video_frame_indices(0, 30.0) == []


@pytest.mark.parametrize("name, match", [("missing.mp4", "not found"), ("corrupt.mp4", "cannot read video"),
                                         ("corrupt.png", "cannot read video")])
def test_bad_video_is_input_error(media, name, match):
    path = media["root"] / name
    with pytest.raises(InputError, match=match) as err:
        sample_video_frames(path)
    _one_line_naming(err, path)


def test_load_audio_mono_resampled(media):
    audio = load_audio(media["wav"], sampling_rate=16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 8000) <= 64  # 0.5 s at 16 kHz (the resampler may trim a few samples)
    assert 0.4 < float(np.abs(audio).max()) < 0.6  # the 0.5-amplitude sine survives the downmix


def test_load_audio_mono_native_rate(tmp_path):
    path = write_test_wav(tmp_path / "mono.wav", seconds=0.25, sampling_rate=16000, channels=1)
    audio = load_audio(path)
    assert audio.shape == (4000,) and 0.4 < float(np.abs(audio).max()) < 0.6


@pytest.mark.parametrize("name, match", [("missing.wav", "not found"), ("corrupt.mp4", "cannot read audio"),
                                         ("clip.mp4", "no audio stream")])
def test_bad_audio_is_input_error(media, name, match):
    path = media["root"] / name
    with pytest.raises(InputError, match=match) as err:
        load_audio(path)
    _one_line_naming(err, path)
