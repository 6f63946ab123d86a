//! The snapshots a BuildCache's status records, and which of them may be restored. Only a
//! record the controller made from a save's own result carries the manifest digest that
//! save reported (`manifestSha256`), and only such a pinned record is ever restored: a
//! snapshot listed from the store may have been planted by anyone who can write it. Pure.

use std::collections::HashSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{BuildCacheStatus, ReplicaState, SnapshotRecord};
use crate::snapshot::cli::LISTED;

/// The digest a restore of `record` must find, if it may be restored at all.
pub fn pin(record: &SnapshotRecord) -> Option<&str> {
    record.manifest_sha256.as_deref()
}

/// The newest record that may be restored.
pub fn newest_pinned(snapshots: &[SnapshotRecord]) -> Option<&SnapshotRecord> {
    snapshots
        .iter()
        .filter(|s| pin(s).is_some())
        .max_by_key(|s| s.time.0)
}

/// The digest recorded for snapshot `id`, or why it cannot be restored.
pub fn pin_of(snapshots: &[SnapshotRecord], id: &str) -> Result<String, String> {
    match snapshots.iter().find(|s| s.id == id) {
        Some(s) => pin(s).map(str::to_string).ok_or_else(|| unpinned_note(id)),
        None => Err(format!(
            "snapshot {id} is no longer recorded in the BuildCache's status: not restored"
        )),
    }
}

/// Why a record without a digest is not restored.
pub fn unpinned_note(id: &str) -> String {
    format!("snapshot {id} has no recorded manifest digest (saved before Hearth pinned manifests, or only listed from the store): not restored")
}

/// Records a snapshot the controller just saved, newest first, keeping at most `keep`:
/// records listed from the store (unpinned, perhaps planted) give way before pinned ones.
pub fn record_save(snapshots: &mut Vec<SnapshotRecord>, record: SnapshotRecord, keep: usize) {
    snapshots.insert(0, record);
    while snapshots.len() > keep.max(1) {
        match snapshots.iter().rposition(|s| pin(s).is_none()) {
            Some(i) => drop(snapshots.remove(i)),
            None => drop(snapshots.pop()),
        }
    }
}

/// The snapshot ids a gc must never forget: those live replicas match, and the newest
/// `retain` pinned records, so that manifests planted in the store (newer, to push the real
/// ones out of `--retain`) cannot make gc forget the snapshots the controller restores.
pub fn gc_keep(status: &BuildCacheStatus, retain: i32) -> Vec<String> {
    let mut pinned: Vec<&SnapshotRecord> = status
        .snapshots
        .iter()
        .filter(|s| pin(s).is_some())
        .collect();
    pinned.sort_by_key(|s| std::cmp::Reverse(s.time.0));
    let mut keep: Vec<String> = status
        .replicas
        .iter()
        .filter(|r| r.state != ReplicaState::Lost)
        .filter_map(|r| r.snapshot_id.clone())
        .chain(
            pinned
                .iter()
                .take(retain.max(1) as usize)
                .map(|s| s.id.clone()),
        )
        .collect();
    let mut seen = HashSet::new();
    keep.retain(|id| seen.insert(id.clone()));
    keep
}

/// The records after a `hearth snapshot gc --cache C --json` result: the store's listing
/// (newest first), each snapshot the controller recorded itself kept as recorded (with its
/// digest, time and sizes: the store's copy of a manifest is not trusted), and pinned records
/// the listing left out kept too when the listing was cut short (unless gc forgot them).
/// `None` when the result lists nothing (an older or failed gc).
pub fn after_gc(previous: &[SnapshotRecord], result: &str) -> Option<Vec<SnapshotRecord>> {
    let v: serde_json::Value = serde_json::from_str(result).ok()?;
    let listed: Vec<SnapshotRecord> = v
        .get("snapshots")?
        .as_array()?
        .iter()
        .map(listed_record)
        .collect::<Option<_>>()?;
    let count = v.get("snapshotCount").and_then(|c| c.as_u64());
    let complete = count.is_none_or(|c| c as usize <= listed.len());
    let forgotten: HashSet<&str> = v
        .get("forgotten")
        .and_then(|f| f.as_array())
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str()?.rsplit('/').next())
        .collect();
    let recorded = |id: &str| previous.iter().find(|p| p.id == id && pin(p).is_some());
    let listed_ids: HashSet<&str> = listed.iter().map(|s| s.id.as_str()).collect();
    let mut pinned: Vec<SnapshotRecord> = listed
        .iter()
        .filter_map(|s| recorded(&s.id).cloned())
        .collect();
    if !complete {
        pinned.extend(
            previous
                .iter()
                .filter(|p| pin(p).is_some())
                .filter(|p| !listed_ids.contains(p.id.as_str()))
                .filter(|p| !forgotten.contains(p.id.as_str()))
                .cloned(),
        );
    }
    let room = LISTED.saturating_sub(pinned.len());
    let mut out = pinned;
    out.extend(
        listed
            .into_iter()
            .filter(|s| recorded(&s.id).is_none())
            .take(room),
    );
    out.sort_by_key(|s| std::cmp::Reverse(s.time.0));
    Some(out)
}

/// One snapshot of a gc listing, as the store describes it: never pinned.
fn listed_record(s: &serde_json::Value) -> Option<SnapshotRecord> {
    Some(SnapshotRecord {
        id: s.get("id")?.as_str()?.to_string(),
        time: Time(s.get("created")?.as_str()?.parse().ok()?),
        bytes: s.get("bytes")?.as_i64()?,
        new_bytes: s.get("newBytes")?.as_i64()?,
        manifest_sha256: None,
    })
}

#[cfg(test)]
#[path = "snapshot_records_tests.rs"]
mod tests;
