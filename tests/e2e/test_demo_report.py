"""`make demo`'s report (imgpipe.local.demo): a missing thumbnail fails the demo, by name."""

import boto3
import pytest

from images import make_image
from imgpipe.local import demo


@pytest.fixture
def bucket(moto_endpoint, unique_name, monkeypatch):
    boto3.client("s3").create_bucket(Bucket=unique_name)
    monkeypatch.setenv("BUCKET_NAME", unique_name)
    return unique_name


def test_a_thumbnail_that_never_comes_fails_the_demo_by_name(bucket, tmp_path, capsys):
    # Given an upload no consumer will turn into a thumbnail
    image = tmp_path / "lonely photo.png"
    image.write_bytes(make_image("PNG", size=(40, 30)))

    # When the demo waits for it
    status = demo.main(["--timeout", "0.5", "--out", str(tmp_path / "out"), str(image)])

    # Then it fails, names the image, and the table says MISSING
    out, err = capsys.readouterr()
    assert status == 1
    assert "no thumbnail for raw-images/lonely photo.png" in err
    assert "raw-images/lonely photo.png" in out and "MISSING" in out
    assert not (tmp_path / "out" / "lonely photo.png").exists()


def test_the_report_counts_only_missing_thumbnails_as_failures(capsys):
    done = demo.Row("raw-images/a.png", "thumbnails/a.png", make_image("PNG", size=(40, 30)),
                    thumb=make_image("PNG", size=(20, 15)), latency_ms=12.3)
    missing = demo.Row("raw-images/b.png", "thumbnails/b.png", make_image("PNG"))

    assert demo.report([done]) == 0
    assert demo.report([done, missing]) == 1
    out, err = capsys.readouterr()
    assert "40x30" in out and "20x15" in out and "12" in out
    assert err.splitlines() == ["no thumbnail for raw-images/b.png"]
