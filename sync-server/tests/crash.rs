//! Crash safety: a real server process is killed with SIGKILL in the middle
//! of enrollments and forgets, many times; after each restart the database
//! must hold no identity without templates, no template or photo without an
//! identity, no gap in any delta log or in the change log, and each
//! identity's last delta in each of its shards must be an `Upsert` (each
//! forgotten one's a `Remove`).
//!
//! The database (jongodb) keeps running across the server's deaths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Multipart, database, fixture, fresh_name};
use facegate_sync_server::auth::{Role, TokenKeys};
use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc};

const SECRET: &str = "7f3a9c1e5b8d2f4a6c0e9b7d3f1a5c8e2d4b6f0a9c7e";

fn photos() -> Vec<PathBuf> {
    let mut photos: Vec<PathBuf> = ["obama", "biden", "einstein", "takeo"].iter().map(|n| fixture(n)).collect();
    if let Some(faces) = common::dev_set() {
        let mut reader = csv::Reader::from_path(faces.join("gallery.csv")).unwrap();
        for row in reader.records().take(60) {
            let row = row.unwrap();
            if !row[0].starts_with("nba_headshots") {
                photos.push(faces.join(&row[0]));
            }
        }
    }
    photos
}

struct Server {
    child: Child,
    url: String,
}

fn start_server(config: &std::path::Path, port: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_facegate-sync-server"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("FACEGATE__AUTH__JWT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("server starts");
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let mut child = child;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the server exited with {status} before it was ready");
        }
        if let Ok(r) = ureq::get(&format!("{url}/ready")).call()
            && r.status() == 200
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "server not ready after 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, url }
}

fn post_form(url: &str, token: &str, form: &Multipart) -> Result<(u16, serde_json::Value), ureq::Error> {
    let response = ureq::post(url)
        .header("authorization", &format!("Bearer {token}"))
        .header("content-type", &form.content_type())
        .config()
        .http_status_as_error(false)
        .build()
        .send(&form.body()[..])?;
    let status = response.status().as_u16();
    let body = response.into_body().read_json().unwrap_or(serde_json::Value::Null);
    Ok((status, body))
}

fn delete(url: &str, token: &str) -> Result<u16, ureq::Error> {
    let response = ureq::delete(url)
        .header("authorization", &format!("Bearer {token}"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()?;
    Ok(response.status().as_u16())
}

/// Enroll / forget traffic until the server dies or `stop` is set.
fn traffic(
    url: String,
    token: String,
    photos: Arc<Vec<PathBuf>>,
    seed: u64,
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicUsize>,
) {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let groups = ["lobby", "lab", "lobby,lab"];
    while !stop.load(Ordering::Relaxed) {
        let photo = &photos[next() as usize % photos.len()];
        let form = Multipart::new()
            .text("name", "crash test")
            .text("groups", groups[next() as usize % groups.len()])
            .file("photo", photo);
        match post_form(&format!("{url}/v1/identities"), &token, &form) {
            Ok((201, _)) => {
                writes.fetch_add(1, Ordering::Relaxed);
            }
            Ok((409, body)) => {
                if let Some(id) = body["id"].as_str()
                    && let Ok(200) = delete(&format!("{url}/v1/identities/{id}"), &token)
                {
                    writes.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

async fn all(db: &mongodb::Database, collection: &str) -> Vec<Document> {
    db.collection::<Document>(collection).find(doc! {}).await.unwrap().try_collect().await.unwrap()
}

fn int(d: &Document, key: &str) -> i64 {
    d.get_i64(key).or_else(|_| d.get_i32(key).map(i64::from)).unwrap_or_else(|_| panic!("{key} in {d}"))
}

const CHECKED: [&str; 7] = ["identities", "templates", "photos", "deltas", "changes", "counters", "erasures"];

/// How long the database may take to show a killed server's last commit
/// whole. jongodb 0.1.6 (the test database) makes a committed transaction
/// visible one collection at a time: a commit the server sent just before
/// SIGKILL was seen half-applied for up to ~1 s and then complete, every
/// time (measured with pymongo: kill the client 0.1–2 ms into
/// `commitTransaction`, poll). MongoDB itself shows a commit atomically.
/// A half-write by the server itself never converges, so waiting for one
/// hides nothing: the check fails after this long.
const CONVERGENCE: Duration = Duration::from_secs(20);

/// Reads every checked collection and checks the invariants, again and again
/// until they hold or [`CONVERGENCE`] has passed.
async fn check_invariants(db: &mongodb::Database) -> (usize, usize) {
    let started = Instant::now();
    loop {
        let mut snapshot = Vec::new();
        for collection in CHECKED {
            snapshot.push(all(db, collection).await);
        }
        match verify(snapshot) {
            Ok(counts) => return counts,
            Err(broken) if started.elapsed() < CONVERGENCE => {
                eprintln!("not yet consistent ({broken}); reading again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(broken) => panic!("{broken}, still {CONVERGENCE:?} after the kill"),
        }
    }
}

/// The invariants over one read of [`CHECKED`] (in that order).
fn verify(snapshot: Vec<Vec<Document>>) -> Result<(usize, usize), String> {
    macro_rules! ensure {
        ($cond:expr, $($msg:tt)+) => {
            if !$cond {
                return Err(format!($($msg)+));
            }
        };
    }
    let mut snapshot = snapshot.into_iter();
    let mut next = || snapshot.next().unwrap_or_default();
    let (identities, templates, photos, deltas, changes, counters, erasures) =
        (next(), next(), next(), next(), next(), next(), next());
    let ids: BTreeSet<String> = identities.iter().map(|i| i.get_str("_id").unwrap().to_string()).collect();
    let mut templates_of: BTreeMap<String, usize> = BTreeMap::new();
    for t in &templates {
        let owner = t.get_str("identity").unwrap();
        ensure!(ids.contains(owner), "template {} of missing identity {owner}", t.get_str("_id").unwrap());
        *templates_of.entry(owner.to_string()).or_default() += 1;
    }
    let mut photos_of: BTreeMap<String, usize> = BTreeMap::new();
    for p in &photos {
        let owner = p.get_str("identity").unwrap();
        ensure!(ids.contains(owner), "photo of missing identity {owner}");
        *photos_of.entry(owner.to_string()).or_default() += 1;
    }
    for id in &ids {
        ensure!(templates_of.get(id).is_some_and(|n| *n > 0), "identity {id} has no template");
        ensure!(templates_of.get(id) == photos_of.get(id), "identity {id}: templates and photos differ");
    }
    // Gap-free logs.
    let counter = |name: &str| counters.iter().find(|c| c.get_str("_id") == Ok(name)).map_or(0, |c| int(c, "seq"));
    let change_seqs: Vec<i64> = {
        let mut v: Vec<i64> = changes.iter().map(|c| int(c, "_id")).collect();
        v.sort_unstable();
        v
    };
    ensure!(
        change_seqs == (1..=counter("changes")).collect::<Vec<_>>(),
        "change log has a gap: {change_seqs:?} against counter {}",
        counter("changes")
    );
    let mut by_shard: BTreeMap<String, Vec<&Document>> = BTreeMap::new();
    for d in &deltas {
        by_shard.entry(d.get_str("shard").unwrap().to_string()).or_default().push(d);
    }
    for (shard, entries) in &mut by_shard {
        entries.sort_by_key(|d| int(d, "seq"));
        let seqs: Vec<i64> = entries.iter().map(|d| int(d, "seq")).collect();
        ensure!(seqs == (1..=counter(&format!("delta:{shard}"))).collect::<Vec<_>>(), "delta log of {shard} has a gap");
    }
    // Each identity's last entry in each of its shards is an Upsert; a
    // forgotten one's is a Remove.
    let last_kind = |shard: &str, identity: &str| -> Option<String> {
        by_shard
            .get(shard)?
            .iter()
            .rev()
            .find(|d| d.get_str("identity") == Ok(identity))
            .map(|d| d.get_str("kind").unwrap().to_string())
    };
    for i in &identities {
        let id = i.get_str("_id").unwrap();
        for g in i.get_array("groups").unwrap() {
            ensure!(
                last_kind(g.as_str().unwrap(), id).as_deref() == Some("upsert"),
                "{id} in {g}: last entry not an upsert"
            );
        }
    }
    for e in &erasures {
        let id = e.get_str("_id").unwrap();
        if ids.contains(id) {
            continue; // re-enrolled later under the same id: impossible, ids are random
        }
        for s in e.get_array("shards").unwrap() {
            let shard = s.as_document().unwrap().get_str("shard").unwrap();
            ensure!(
                last_kind(shard, id).as_deref() == Some("remove"),
                "forgotten {id} in {shard}: last entry not a remove"
            );
        }
    }
    Ok((identities.len(), deltas.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_enrollments_leaves_no_half_written_identity_and_no_log_gap() {
    let iterations: usize = std::env::var("FACEGATE_CRASH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let database_guard = database();
    let db_name = fresh_name();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("photo.key");
    std::fs::write(&key, [42u8; 32]).unwrap();
    let port = facegate_sync_server::devdb::free_port().unwrap();
    let config = dir.path().join("server.toml");
    let mut file = std::fs::File::create(&config).unwrap();
    write!(
        file,
        "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown-grace-secs = 1\n\n[mongodb]\nuri = \"{}\"\ndatabase = \"{db_name}\"\n\n\
         [storage]\nphoto-key-file = \"{}\"\n\n[enrollment]\nworkers = 2\n\n[index]\nfollow-interval-ms = 200\n",
        database_guard.uri,
        key.display()
    )
    .unwrap();
    drop(file);

    let client = mongodb::Client::with_uri_str(&database_guard.uri).await.unwrap();
    let db = client.database(&db_name);
    let keys = TokenKeys::hs256(SECRET.as_bytes(), Duration::from_secs(3600), "facegate-sync-server");
    let token = keys.issue("crash-test", Role::Admin).unwrap().0;
    let photos = Arc::new(photos());
    let writes = Arc::new(AtomicUsize::new(0));
    let mut kills = 0;
    for iteration in 0..iterations {
        let mut server = start_server(&config, port);
        if iteration == 0 {
            for g in ["lobby", "lab"] {
                let r = ureq::post(&format!("{}/v1/groups", server.url))
                    .header("authorization", &format!("Bearer {token}"))
                    .send_json(serde_json::json!({ "id": g }))
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..3)
            .map(|w| {
                let (url, token, photos, stop, writes) =
                    (server.url.clone(), token.clone(), Arc::clone(&photos), Arc::clone(&stop), Arc::clone(&writes));
                std::thread::spawn(move || {
                    traffic(url, token, photos, (iteration * 7 + w + 1) as u64 * 0x9e37_79b9, stop, writes)
                })
            })
            .collect();
        // Kill at a different moment each time: 0.3 s to 2.3 s into the traffic.
        let delay = 300 + (iteration as u64 * 617) % 2000;
        std::thread::sleep(Duration::from_millis(delay));
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        kills += 1;
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        let (identities, deltas) = check_invariants(&db).await;
        eprintln!(
            "iteration {iteration}: killed after {delay} ms; {identities} identities, {deltas} delta-log entries, {} writes so far",
            writes.load(Ordering::Relaxed)
        );
    }
    // A last restart: the server comes up and its index holds every template.
    let mut server = start_server(&config, port);
    let templates = db.collection::<Document>("templates").count_documents(doc! {}).await.unwrap();
    let metrics = ureq::get(&format!("{}/metrics", server.url)).call().unwrap().into_body().read_to_string().unwrap();
    let indexed = metrics
        .lines()
        .find(|l| l.starts_with("facegate_index_templates "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert_eq!(indexed, templates, "index after restart");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert!(writes.load(Ordering::Relaxed) >= iterations, "too little traffic reached the server");
    eprintln!("{kills} SIGKILLs, {} committed writes, invariants held after each", writes.load(Ordering::Relaxed));
}
