//! Two server replicas on one database: each follows the other's writes
//! through the change log, so de-duplication sees faces enrolled anywhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{TestServer, database, fixture, fresh_name};
use facegate_protocol::IdentityId;
use facegate_sync_server::auth::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_face_enrolled_on_one_replica_is_a_duplicate_on_the_other() {
    let db = database();
    let name = fresh_name();
    let a = TestServer::start(&db.uri, &name).await;
    let b = TestServer::start(&db.uri, &name).await;
    let (status, body) = a.enroll("Barack Obama", &[fixture("obama")], &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = IdentityId::new(body["id"].as_str().unwrap()).unwrap();

    // B's follower polls every 100 ms.
    let started = Instant::now();
    while !b.state().engine.index.contains(&id) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "replica B never saw the enrollment: B at change {}, index {:?}; A at {}",
            b.state().engine.index.applied_seq(),
            b.state().engine.index.size(),
            a.state().engine.index.applied_seq()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("replica B followed in {:?}", started.elapsed());
    let (status, body) = b.enroll("Not Obama", &[fixture("obama2")], &[]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["id"].as_str(), Some(id.as_str()));

    // A forget on B reaches A's index too.
    let (status, _) = b
        .send(
            axum::http::Request::delete(format!("/v1/identities/{id}"))
                .header("authorization", format!("Bearer {}", b.token(Role::Admin)))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let started = Instant::now();
    while a.state().engine.index.contains(&id) {
        assert!(started.elapsed() < Duration::from_secs(10), "replica A never forgot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Both indexes converge on the head of the change log (B applied its
    // own forget at once; its follower moves its position past it).
    let head = a.app.store.counter(facegate_sync_server::store::CHANGES_COUNTER).await.unwrap();
    let started = Instant::now();
    while a.state().engine.index.applied_seq() != head || b.state().engine.index.applied_seq() != head {
        assert!(started.elapsed() < Duration::from_secs(10), "indexes did not converge on change {head}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.app.stop().await;
    b.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enrollments_of_one_face_on_two_replicas_admit_exactly_one() {
    let db = database();
    let name = fresh_name();
    let a = TestServer::start(&db.uri, &name).await;
    let b = TestServer::start(&db.uri, &name).await;
    let (first, second) = ([fixture("obama")], [fixture("obama2")]);
    let (ra, rb) = tokio::join!(a.enroll("first", &first, &[]), b.enroll("second", &second, &[]));
    let statuses = [ra.0, rb.0];
    assert!(statuses.contains(&StatusCode::CREATED), "{ra:?} {rb:?}");
    assert!(statuses.contains(&StatusCode::CONFLICT), "both admitted: {ra:?} {rb:?}");
    assert_eq!(a.app.store.count_identities().await.unwrap(), 1);
    a.app.stop().await;
    b.app.stop().await;
}
