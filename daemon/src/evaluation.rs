//! `eval pairs` and `eval identify`: accuracy of the pipeline on a labelled
//! set of photos, overall and per group (NIST FRVT-style differentials).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use facegate_face::eval::{self, IdentificationCounts, ProbeOutcome};
use facegate_face::manifest::OperatingPoint;
use facegate_face::thresholds::OpenSetRule;
use facegate_face::{FaceError, FacePipeline, Gallery, Template};
use serde::Serialize;

/// The FMRs reported (and calibrated) by `eval pairs`.
pub const REPORTED_FMRS: [(&str, f64); 3] = [("1e-2", 1e-2), ("1e-3", 1e-3), ("1e-4", 1e-4)];

/// Errors of the evaluation runner (bad lists, unreadable files).
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Csv { path: PathBuf, message: String },
    #[error("the embedder manifest has no shipped match threshold; calibrate it first")]
    NoThreshold,
}

/// A CSV file as rows of named columns.
#[derive(Debug)]
pub struct Table {
    path: PathBuf,
    rows: Vec<HashMap<String, String>>,
}

impl Table {
    pub fn read(path: &Path, required: &[&str]) -> Result<Self, EvalError> {
        let csv_error = |message: String| EvalError::Csv { path: path.to_path_buf(), message };
        let mut reader = csv::Reader::from_path(path).map_err(|e| match e.into_kind() {
            csv::ErrorKind::Io(source) => EvalError::Read { path: path.to_path_buf(), source },
            other => csv_error(format!("{other:?}")),
        })?;
        let headers = reader.headers().map_err(|e| csv_error(e.to_string()))?.clone();
        for column in required {
            if !headers.iter().any(|h| h == *column) {
                return Err(csv_error(format!(
                    "missing column {column:?} (has {:?})",
                    headers.iter().collect::<Vec<_>>()
                )));
            }
        }
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| csv_error(e.to_string()))?;
            rows.push(headers.iter().zip(record.iter()).map(|(h, v)| (h.to_owned(), v.to_owned())).collect());
        }
        Ok(Self { path: path.to_path_buf(), rows })
    }

    fn get<'a>(&self, row: &'a HashMap<String, String>, column: &str, line: usize) -> Result<&'a str, EvalError> {
        row.get(column).map(String::as_str).ok_or_else(|| EvalError::Csv {
            path: self.path.clone(),
            message: format!("row {line}: no value for {column:?}"),
        })
    }
}

/// Group labels of photos, from a manifest CSV (`path` plus a group column,
/// and `identity` when present).
#[derive(Debug, Default)]
pub struct Groups {
    column: String,
    by_path: HashMap<String, String>,
    identity: HashMap<String, String>,
}

impl Groups {
    pub fn read(path: &Path, column: &str) -> Result<Self, EvalError> {
        let table = Table::read(path, &["path", column])?;
        let mut by_path = HashMap::new();
        let mut identity = HashMap::new();
        for (line, row) in table.rows.iter().enumerate() {
            let photo = table.get(row, "path", line)?.to_owned();
            if let Some(id) = row.get("identity") {
                identity.insert(photo.clone(), id.clone());
            }
            by_path.insert(photo, table.get(row, column, line)?.to_owned());
        }
        Ok(Self { column: column.to_owned(), by_path, identity })
    }

    /// Every pair of photos of different people within one group, by group.
    fn within_group_impostors(&self) -> BTreeMap<String, Vec<(String, String)>> {
        let mut members: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (path, group) in &self.by_path {
            if self.identity.contains_key(path) {
                members.entry(group.as_str()).or_default().push(path.as_str());
            }
        }
        members
            .into_iter()
            .map(|(group, mut photos)| {
                photos.sort_unstable();
                let mut pairs = Vec::new();
                for (i, a) in photos.iter().enumerate() {
                    for b in &photos[i + 1..] {
                        if self.identity.get(*a) != self.identity.get(*b) {
                            pairs.push(((*a).to_owned(), (*b).to_owned()));
                        }
                    }
                }
                (group.to_owned(), pairs)
            })
            .collect()
    }

    fn of(&self, path: &str) -> &str {
        self.by_path.get(path).map_or("unknown", String::as_str)
    }
}

/// Why one photo gave no template.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub path: String,
    pub reason: String,
    pub code: &'static str,
}

/// Templates for a set of photos, computed on all cores, each photo once.
#[derive(Debug)]
pub struct TemplateCache {
    templates: HashMap<String, Result<Template, Failure>>,
}

impl TemplateCache {
    pub fn build(pipeline: &FacePipeline, root: &Path, paths: &[String], threads: usize) -> Self {
        let next = AtomicUsize::new(0);
        let results = Mutex::new(HashMap::with_capacity(paths.len()));
        std::thread::scope(|scope| {
            for _ in 0..threads.max(1) {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = paths.get(i) else { break };
                        let result = template_of(pipeline, &root.join(path)).map_err(|(code, reason)| Failure {
                            path: path.clone(),
                            reason,
                            code,
                        });
                        results.lock().unwrap_or_else(|p| p.into_inner()).insert(path.clone(), result);
                    }
                });
            }
        });
        Self { templates: results.into_inner().unwrap_or_else(|p| p.into_inner()) }
    }

    fn get(&self, path: &str) -> Option<&Template> {
        self.templates.get(path).and_then(|r| r.as_ref().ok())
    }

    fn failures(&self) -> Vec<Failure> {
        let mut failures: Vec<Failure> = self.templates.values().filter_map(|r| r.as_ref().err().cloned()).collect();
        failures.sort_by(|a, b| a.path.cmp(&b.path));
        failures
    }
}

fn template_of(pipeline: &FacePipeline, path: &Path) -> Result<Template, (&'static str, String)> {
    let bytes = std::fs::read(path).map_err(|e| ("unreadable-file", e.to_string()))?;
    let image = facegate_face::decode_image(&bytes).map_err(|e| ("unreadable-image", e.to_string()))?;
    pipeline.probe(&image).map(|a| a.template).map_err(|e: FaceError| (e.code(), e.to_string()))
}

/// Verification figures of one group at the shipped threshold. Pairs whose
/// two photos are both in the group give the within-group figures (how NIST
/// FRVT reports demographic differentials); `involving` counts every impostor
/// pair with at least one photo in the group.
#[derive(Debug, Serialize)]
pub struct GroupFigures {
    pub genuine: usize,
    pub impostor: usize,
    pub failed: usize,
    pub fnmr: f64,
    pub fmr: f64,
    /// This group's FMR divided by the FMR over all pairs (1 = no differential).
    pub fmr_ratio: Option<f64>,
    pub eer: f64,
    pub involving: InvolvingFigures,
    /// With `--within-group-impostors`: every impostor pair among the group's
    /// photos in the manifest, not only those in the pairs file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_impostors: Option<InvolvingFigures>,
}

/// Impostor figures over pairs with at least one photo in the group.
#[derive(Debug, Serialize)]
pub struct InvolvingFigures {
    pub impostor: usize,
    pub fmr: f64,
    pub fmr_ratio: Option<f64>,
}

/// The `eval pairs --json` report.
#[derive(Debug, Serialize)]
pub struct PairsReport {
    pub model: String,
    pub genuine: usize,
    pub impostor: usize,
    /// Pairs with at least one photo that gave no template.
    pub failed: usize,
    pub failed_genuine: usize,
    pub failed_impostor: usize,
    pub threshold: f32,
    pub fnmr: f64,
    pub fmr: f64,
    pub eer: f64,
    pub eer_threshold: f32,
    pub fnmr_at_fmr: BTreeMap<&'static str, f64>,
    pub threshold_at_fmr: BTreeMap<&'static str, f32>,
    /// The FMR actually reached at each of those thresholds (at most the target).
    pub achieved_fmr: BTreeMap<&'static str, f64>,
    /// The manifest column groups come from, and the figures per group.
    pub group_by: Option<String>,
    pub groups: BTreeMap<String, GroupFigures>,
    pub failed_images: Vec<Failure>,
    /// The measured operating curve, ready for the manifest's [thresholds].
    #[serde(skip)]
    pub curve: Vec<OperatingPoint>,
}

struct Pair {
    a: String,
    b: String,
    same: bool,
}

/// Runs `eval pairs`.
pub fn evaluate_pairs(
    pipeline: &FacePipeline,
    root: &Path,
    pairs_csv: &Path,
    groups: Option<&Groups>,
    within_group_impostors: bool,
    threads: usize,
) -> Result<PairsReport, EvalError> {
    let threshold = pipeline.match_threshold().ok_or(EvalError::NoThreshold)?;
    let table = Table::read(pairs_csv, &["path_a", "path_b", "same"])?;
    let mut pairs = Vec::with_capacity(table.rows.len());
    for (line, row) in table.rows.iter().enumerate() {
        let same = match table.get(row, "same", line)?.trim() {
            "1" | "true" => true,
            "0" | "false" => false,
            other => {
                return Err(EvalError::Csv {
                    path: pairs_csv.to_path_buf(),
                    message: format!("row {line}: same must be 0 or 1, got {other:?}"),
                });
            }
        };
        pairs.push(Pair {
            a: table.get(row, "path_a", line)?.to_owned(),
            b: table.get(row, "path_b", line)?.to_owned(),
            same,
        });
    }
    let extra = match groups {
        Some(g) if within_group_impostors => g.within_group_impostors(),
        _ => BTreeMap::new(),
    };
    let mut paths: Vec<String> = pairs
        .iter()
        .flat_map(|p| [p.a.clone(), p.b.clone()])
        .chain(extra.values().flatten().flat_map(|(a, b)| [a.clone(), b.clone()]))
        .collect();
    paths.sort();
    paths.dedup();
    let cache = TemplateCache::build(pipeline, root, &paths, threads);
    let score_of = |a: &str, b: &str| match (cache.get(a), cache.get(b)) {
        (Some(a), Some(b)) => a.similarity(b).unwrap_or(f32::NEG_INFINITY),
        _ => f32::NEG_INFINITY,
    };

    #[derive(Default)]
    struct Scores {
        genuine: Vec<f32>,
        impostor: Vec<f32>,
        failed: usize,
        involving_impostor: Vec<f32>,
    }
    let mut all = Scores::default();
    let mut failed_genuine = 0;
    let mut failed_impostor = 0;
    let mut by_group: BTreeMap<String, Scores> = BTreeMap::new();
    for pair in &pairs {
        let score = score_of(&pair.a, &pair.b);
        let failed = !score.is_finite();
        record(&mut all, pair.same, score, failed);
        if failed {
            if pair.same { failed_genuine += 1 } else { failed_impostor += 1 }
        }
        if let Some(g) = groups {
            let (ga, gb) = (g.of(&pair.a), g.of(&pair.b));
            if ga == gb {
                record(by_group.entry(ga.to_owned()).or_default(), pair.same, score, failed);
            }
            if !pair.same {
                by_group.entry(ga.to_owned()).or_default().involving_impostor.push(score);
                if gb != ga {
                    by_group.entry(gb.to_owned()).or_default().involving_impostor.push(score);
                }
            }
        }
    }
    fn record(scores: &mut Scores, same: bool, score: f32, failed: bool) {
        if same {
            scores.genuine.push(score)
        } else {
            scores.impostor.push(score)
        }
        scores.failed += usize::from(failed);
    }
    let overall_fmr = eval::fmr(&all.impostor, threshold);
    let ratio = |fmr: f64, n: usize| (overall_fmr > 0.0 && n > 0).then(|| fmr / overall_fmr);
    let groups_out = by_group
        .into_iter()
        .map(|(name, s)| {
            let fmr = eval::fmr(&s.impostor, threshold);
            let involving_fmr = eval::fmr(&s.involving_impostor, threshold);
            let figures = GroupFigures {
                genuine: s.genuine.len(),
                impostor: s.impostor.len(),
                failed: s.failed,
                fnmr: eval::fnmr(&s.genuine, threshold),
                fmr,
                fmr_ratio: ratio(fmr, s.impostor.len()),
                eer: eval::equal_error_rate(&s.genuine, &s.impostor).eer,
                involving: InvolvingFigures {
                    impostor: s.involving_impostor.len(),
                    fmr: involving_fmr,
                    fmr_ratio: ratio(involving_fmr, s.involving_impostor.len()),
                },
                all_impostors: extra.get(&name).map(|pairs| {
                    let scores: Vec<f32> = pairs.iter().map(|(a, b)| score_of(a, b)).collect();
                    let fmr = eval::fmr(&scores, threshold);
                    InvolvingFigures { impostor: scores.len(), fmr, fmr_ratio: ratio(fmr, scores.len()) }
                }),
            };
            (name, figures)
        })
        .collect();
    let targets: Vec<f64> = REPORTED_FMRS.iter().map(|(_, f)| *f).collect();
    let curve = eval::operating_curve(&all.genuine, &all.impostor, &targets);
    let eer = eval::equal_error_rate(&all.genuine, &all.impostor);
    Ok(PairsReport {
        model: pipeline.model_id().to_owned(),
        genuine: all.genuine.len(),
        impostor: all.impostor.len(),
        failed: all.failed,
        failed_genuine,
        failed_impostor,
        threshold,
        fnmr: eval::fnmr(&all.genuine, threshold),
        fmr: overall_fmr,
        eer: eer.eer,
        eer_threshold: eer.threshold,
        fnmr_at_fmr: REPORTED_FMRS.iter().zip(&curve).map(|((name, _), p)| (*name, p.fnmr)).collect(),
        threshold_at_fmr: REPORTED_FMRS.iter().zip(&curve).map(|((name, _), p)| (*name, p.threshold)).collect(),
        achieved_fmr: REPORTED_FMRS
            .iter()
            .zip(&curve)
            .map(|((name, _), p)| (*name, eval::fmr(&all.impostor, p.threshold)))
            .collect(),
        group_by: groups.map(|g| g.column.clone()),
        groups: groups_out,
        failed_images: cache.failures(),
        curve,
    })
}

/// Open-set figures under one decision rule (threshold and margin).
#[derive(Debug, Serialize)]
pub struct OpenSetFigures {
    pub threshold: f32,
    pub margin: f32,
    pub rank1: f64,
    pub fnir: f64,
    pub fpir: f64,
    #[serde(flatten)]
    pub counts: IdentificationCounts,
}

impl OpenSetFigures {
    fn new(outcomes: &[ProbeOutcome], rule: OpenSetRule) -> Self {
        let counts = eval::identification_counts(outcomes, &rule);
        Self {
            threshold: rule.threshold,
            margin: rule.margin,
            rank1: counts.rank1(),
            fnir: counts.fnir(),
            fpir: counts.fpir(),
            counts,
        }
    }
}

/// The `eval identify --json` report.
#[derive(Debug, Serialize)]
pub struct IdentifyReport {
    pub model: String,
    pub gallery_images: usize,
    pub gallery_identities: usize,
    pub gallery_failed: usize,
    pub probes: usize,
    pub failed_probes: usize,
    pub rank1: f64,
    pub fnir: f64,
    pub fpir: f64,
    pub threshold: f32,
    /// The shipped margin the best identity must have over the runner-up.
    pub margin: f32,
    #[serde(flatten)]
    pub counts: IdentificationCounts,
    /// The same threshold without the margin rule, for comparison.
    pub without_margin: OpenSetFigures,
    /// The gallery-size-aware threshold for the target FPIR, and its figures.
    pub open_set: Option<OpenSetReport>,
    pub group_by: Option<String>,
    pub groups: BTreeMap<String, OpenSetFigures>,
    pub failed_images: Vec<Failure>,
}

#[derive(Debug, Serialize)]
pub struct OpenSetReport {
    pub target_fpir: f64,
    pub per_comparison_fmr: f64,
    pub beyond_calibration: bool,
    #[serde(flatten)]
    pub figures: OpenSetFigures,
}

/// Runs `eval identify`.
pub fn evaluate_identify(
    pipeline: &FacePipeline,
    root: &Path,
    gallery_csv: &Path,
    probes_csv: &Path,
    groups: Option<&Groups>,
    target_fpir: f64,
    threads: usize,
) -> Result<IdentifyReport, EvalError> {
    let rule = pipeline.open_set_rule().ok_or(EvalError::NoThreshold)?;
    let gallery_table = Table::read(gallery_csv, &["path", "identity"])?;
    let probe_table = Table::read(probes_csv, &["path", "identity", "enrolled"])?;
    let mut enrolments = Vec::new();
    for (line, row) in gallery_table.rows.iter().enumerate() {
        enrolments.push((
            gallery_table.get(row, "path", line)?.to_owned(),
            gallery_table.get(row, "identity", line)?.to_owned(),
        ));
    }
    let mut probes = Vec::new();
    for (line, row) in probe_table.rows.iter().enumerate() {
        let enrolled = probe_table.get(row, "enrolled", line)?.trim() == "1";
        probes.push((
            probe_table.get(row, "path", line)?.to_owned(),
            probe_table.get(row, "identity", line)?.to_owned(),
            enrolled,
        ));
    }
    let mut paths: Vec<String> =
        enrolments.iter().map(|(p, _)| p.clone()).chain(probes.iter().map(|(p, _, _)| p.clone())).collect();
    paths.sort();
    paths.dedup();
    let cache = TemplateCache::build(pipeline, root, &paths, threads);

    let mut gallery: Gallery<String> = Gallery::new(pipeline.model_id(), pipeline.embedder().dim());
    let mut gallery_failed = 0;
    for (path, identity) in &enrolments {
        match cache.get(path) {
            Some(template) => gallery
                .insert(identity.clone(), template)
                .map_err(|e| EvalError::Csv { path: gallery_csv.to_path_buf(), message: e.to_string() })?,
            None => gallery_failed += 1,
        }
    }
    let mut outcomes = Vec::with_capacity(probes.len());
    let mut by_group: BTreeMap<String, Vec<ProbeOutcome>> = BTreeMap::new();
    let mut failed_probes = 0;
    for (path, identity, enrolled) in &probes {
        let top = match cache.get(path) {
            Some(template) => gallery.search(template, 2).unwrap_or_default(),
            None => {
                failed_probes += 1;
                Vec::new()
            }
        };
        let outcome = ProbeOutcome {
            enrolled: *enrolled,
            best: top.first().map(|m| (m.score, m.label == *identity)),
            runner_up: top.get(1).map(|m| m.score),
        };
        if let Some(g) = groups {
            by_group.entry(g.of(path).to_owned()).or_default().push(outcome.clone());
        }
        outcomes.push(outcome);
    }
    let overall = OpenSetFigures::new(&outcomes, rule);
    let without_margin = OpenSetFigures::new(&outcomes, OpenSetRule { margin: 0.0, ..rule });
    let open_set = pipeline.open_set_threshold(target_fpir, gallery.identities()).map(|t| OpenSetReport {
        target_fpir,
        per_comparison_fmr: t.per_comparison_fmr,
        beyond_calibration: t.beyond_calibration,
        figures: OpenSetFigures::new(&outcomes, OpenSetRule { threshold: t.threshold, ..rule }),
    });
    Ok(IdentifyReport {
        model: pipeline.model_id().to_owned(),
        gallery_images: enrolments.len(),
        gallery_identities: gallery.identities(),
        gallery_failed,
        probes: probes.len(),
        failed_probes,
        rank1: overall.rank1,
        fnir: overall.fnir,
        fpir: overall.fpir,
        threshold: rule.threshold,
        margin: rule.margin,
        counts: overall.counts,
        without_margin,
        open_set,
        group_by: groups.map(|g| g.column.clone()),
        groups: by_group.into_iter().map(|(k, v)| (k, OpenSetFigures::new(&v, rule))).collect(),
        failed_images: cache.failures(),
    })
}
