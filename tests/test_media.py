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


# -- one media module: orientation, transparency, audio formats, sound tracks, caps ------------------------
from _media_files import AUDIO_FORMATS, write_exif_rotated_jpeg, write_tone, write_transparent_png, \
    write_video_with_sound  # noqa: E402

from x2i_core.media import video_sound_track  # noqa: E402


def test_exif_orientation_applied(tmp_path):
    path = write_exif_rotated_jpeg(tmp_path / "rotated.jpg", size=(40, 20))
    with Image.open(path) as raw:
        assert raw.size == (40, 20)  # stored landscape
    image = load_image(path)
    assert image.size == (20, 40)  # shown portrait, as a viewer shows it
    # orientation 6 turns the image clockwise: the blue left half ends up on top
    top, bottom = np.asarray(image)[5, 10], np.asarray(image)[35, 10]
    assert top[2] > 150 > top[0] and bottom[0] > 150 > bottom[2]


def test_alpha_flattened_onto_white(tmp_path):
    image = load_image(write_transparent_png(tmp_path / "rgba.png"))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)  # transparent black -> white, not black
    assert image.getpixel((15, 0)) == (0, 255, 0)
    half = Image.new("LA", (2, 1), (0, 128))
    assert load_image(half).getpixel((0, 0)) in ((127, 127, 127), (128, 128, 128))  # half-transparent black on white


@pytest.mark.parametrize("fmt", sorted(AUDIO_FORMATS))
def test_audio_formats_to_16k_mono(tmp_path, fmt):
    path = write_tone(tmp_path / f"tone.{fmt}", seconds=1.0, rate=22050, channels=2, hz=440.0)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 15500 <= len(audio) <= 17500  # 1 s at 16 kHz (lossy codecs pad a little)
    assert 0.35 < float(np.abs(audio).max()) < 0.65
    # still a 440 Hz tone: the strongest frequency of the middle half second
    middle = audio[4000:12000]
    peak = np.argmax(np.abs(np.fft.rfft(middle))) * 16000 / len(middle)
    assert abs(peak - 440) < 10


def test_silent_audio_is_valid(tmp_path):
    audio = load_audio(write_tone(tmp_path / "silence.wav", seconds=0.5, rate=16000, channels=1, amplitude=0.0))
    assert len(audio) == 8000 and float(np.abs(audio).max()) == 0.0


def test_audio_with_no_samples_is_an_error(tmp_path):
    import wave

    with wave.open(str(tmp_path / "zero.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
    path = tmp_path / "zero.wav"
    with pytest.raises(InputError, match="no samples") as err:
        load_audio(path)
    _one_line_naming(err, path)


def test_empty_files_name_the_file(tmp_path):
    for name, load in (("e.png", load_image), ("e.mp4", sample_video_frames), ("e.wav", load_audio)):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(InputError, match="is empty") as err:
            load(tmp_path / name)
        _one_line_naming(err, tmp_path / name)


def test_unsupported_audio_file(media):
    path = media["root"] / "gray.png"
    with pytest.raises(InputError) as err:
        load_audio(path)
    _one_line_naming(err, path)


def test_video_sound_track(tmp_path, media):
    path = write_video_with_sound(tmp_path / "sound.mp4", seconds=2.0, fps=4, hz=330.0)
    sound = video_sound_track(path)
    assert 31000 <= len(sound) <= 34000 and float(np.abs(sound).max()) > 0.3
    peak = np.argmax(np.abs(np.fft.rfft(sound[8000:24000]))) * 16000 / 16000
    assert abs(peak - 330) < 10
    frames, rate = sample_video(path)  # the same file still reads as a video
    assert len(frames) == 2 and rate == pytest.approx(1.0)
    with pytest.raises(InputError, match="no sound track") as err:
        video_sound_track(media["video"])
    _one_line_naming(err, media["video"])


def test_duration_caps(tmp_path, media):
    with pytest.raises(InputError, match="over the 2 s cap") as err:
        sample_video(media["video"], max_seconds=2)  # a 3 s clip
    _one_line_naming(err, media["video"])
    tone = write_tone(tmp_path / "long.flac", seconds=3.0, rate=16000, channels=1)
    with pytest.raises(InputError, match="over the 1.5 s cap") as err:
        load_audio(tone, max_seconds=1.5)
    _one_line_naming(err, tone)
    assert len(load_audio(tone, max_seconds=None)) == 48000
    with pytest.raises(InputError, match="cap"):
        load_audio(np.zeros(32000, np.float32), max_seconds=1)


def test_audio_arrays(media):
    stereo = np.stack([np.full(100, 0.5, np.float32), np.zeros(100, np.float32)])
    assert np.allclose(load_audio(stereo), 0.25)
    with pytest.raises(InputError, match="non-empty"):
        load_audio(np.zeros(0, np.float32))
