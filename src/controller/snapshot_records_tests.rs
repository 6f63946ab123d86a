use super::*;
use crate::api::ReplicaStatus;

fn at(second: i64) -> Time {
    Time(jiff::Timestamp::from_second(second).unwrap())
}

fn pinned(id: &str, second: i64) -> SnapshotRecord {
    SnapshotRecord {
        id: id.into(),
        time: at(second),
        bytes: 100,
        new_bytes: 10,
        manifest_sha256: Some(format!("{:0>64}", id.len())),
    }
}

fn listed(id: &str, second: i64) -> SnapshotRecord {
    SnapshotRecord {
        manifest_sha256: None,
        ..pinned(id, second)
    }
}

fn ids(records: &[SnapshotRecord]) -> Vec<&str> {
    records.iter().map(|s| s.id.as_str()).collect()
}

/// A gc result listing `snapshots` (newest first) out of `count`, having forgotten `forgotten`.
fn gc_result(snapshots: &[(&str, &str)], count: usize, forgotten: &[&str]) -> String {
    let listed: Vec<serde_json::Value> = snapshots
        .iter()
        .map(|(id, created)| serde_json::json!({"id": id, "created": created, "bytes": 7, "newBytes": 1}))
        .collect();
    let forgotten: Vec<String> = forgotten.iter().map(|id| format!("shop/{id}")).collect();
    serde_json::json!({"forgotten": forgotten, "snapshotCount": count, "snapshots": listed})
        .to_string()
}

#[test]
fn only_pinned_records_are_restorable() {
    let records = vec![
        listed("planted", 300),
        pinned("saved", 200),
        listed("old", 100),
    ];
    assert_eq!(
        newest_pinned(&records).map(|s| s.id.as_str()),
        Some("saved")
    );
    assert_eq!(
        pin_of(&records, "saved").unwrap(),
        pinned("saved", 0).manifest_sha256.unwrap()
    );
    let e = pin_of(&records, "planted").unwrap_err();
    assert!(e.contains("no recorded manifest digest"), "{e}");
    let e = pin_of(&records, "gone").unwrap_err();
    assert!(e.contains("no longer recorded"), "{e}");
}

#[test]
fn a_gc_listing_never_replaces_what_a_save_recorded() {
    // The store holds a planted manifest newer than the real ones, and a replaced one under
    // the id of a real snapshot: its listed time and sizes are not taken, nor its digest
    // dropped.
    let previous = vec![pinned("s2", 200), pinned("s1", 100)];
    let result = gc_result(
        &[
            ("planted", "2030-01-01T00:00:00Z"),
            ("s2", "2030-01-01T00:00:00Z"),
            ("s1", "2026-01-01T00:00:00Z"),
        ],
        3,
        &[],
    );
    let after = after_gc(&previous, &result).unwrap();
    assert_eq!(ids(&after), ["planted", "s2", "s1"]);
    assert_eq!(after[1], previous[0], "s2 kept as the save recorded it");
    assert_eq!(after[2], previous[1]);
    assert_eq!(
        after[0].manifest_sha256, None,
        "a listed snapshot is never pinned"
    );
}

#[test]
fn planted_manifests_cannot_push_pinned_records_out_of_status() {
    // 24 planted manifests fill the gc listing (cut at 24 of 26): the real ones are kept.
    let previous = vec![pinned("s2", 200), pinned("s1", 100)];
    let planted: Vec<(String, &str)> = (0..LISTED)
        .map(|i| (format!("planted-{i:02}"), "2030-01-01T00:00:00Z"))
        .collect();
    let listing: Vec<(&str, &str)> = planted.iter().map(|(i, c)| (i.as_str(), *c)).collect();
    let after = after_gc(&previous, &gc_result(&listing, LISTED + 2, &[])).unwrap();
    assert_eq!(after.len(), LISTED, "still bounded");
    assert!(
        after.contains(&previous[0]) && after.contains(&previous[1]),
        "{after:?}"
    );
    // What gc forgot goes, and so does what a complete listing no longer has.
    let after = after_gc(&previous, &gc_result(&listing, LISTED + 1, &["s1"])).unwrap();
    assert!(after.contains(&previous[0]) && !after.contains(&previous[1]));
    let after = after_gc(
        &previous,
        &gc_result(&[("s2", "2026-01-01T00:00:00Z")], 1, &[]),
    )
    .unwrap();
    assert_eq!(after, vec![previous[0].clone()]);
}

#[test]
fn a_save_displaces_listed_records_before_pinned_ones() {
    let mut records = vec![
        listed("planted-2", 400),
        listed("planted-1", 300),
        pinned("s1", 100),
    ];
    record_save(&mut records, pinned("s2", 500), 2);
    assert_eq!(ids(&records), ["s2", "s1"]);
    record_save(&mut records, pinned("s3", 600), 2);
    assert_eq!(ids(&records), ["s3", "s2"]);
}

#[test]
fn gc_keeps_the_newest_pinned_snapshots_and_those_replicas_match() {
    // Newer planted manifests would take every `--retain` slot: the snapshots the controller
    // restores are passed as `--keep`, so gc never forgets them for planted ones.
    let status = BuildCacheStatus {
        snapshots: vec![
            listed("planted", 900),
            pinned("s3", 300),
            pinned("s2", 200),
            pinned("s1", 100),
        ],
        replicas: serde_json::from_value::<Vec<ReplicaStatus>>(serde_json::json!([
            {"pvc": "c-r0", "state": "Idle", "snapshotId": "s1"},
            {"pvc": "c-r1", "state": "Lost", "snapshotId": "lost"}
        ]))
        .unwrap(),
        ..BuildCacheStatus::default()
    };
    assert_eq!(gc_keep(&status, 2), ["s1", "s3", "s2"]);
}
