//! Checks every entry of a received tar before anything is unpacked: no absolute paths, no
//! `..`, no symlink or hard link that resolves outside the context, no devices or FIFOs.
//!
//! Symlink targets are resolved the way the kernel would after unpacking, against the
//! symlinks the archive itself creates (the staging directory starts empty, so those are the
//! only ones there will be): `s -> r/..` with `r -> .` escapes although it looks inside.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use super::UploadError;

/// Most symlinks followed while resolving one path (as Linux's `MAXSYMLINKS`).
const MAX_HOPS: u32 = 40;

type Parts = Vec<String>;

enum Resolved {
    Inside(Parts),
    Outside,
    /// A symlink loop: resolves to nothing, so it cannot lead anywhere.
    Loop,
}

/// Checks all entries of a tar; the number of entries when every one is acceptable.
pub fn check_entries(tar: impl Read) -> Result<u64, UploadError> {
    let mut entries: Vec<(Parts, String, tar::EntryType, Option<PathBuf>)> = Vec::new();
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries()? {
        let entry = entry?;
        let kind = entry.header().entry_type();
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = entry.path()?.into_owned();
        let link = entry.link_name()?.map(|l| l.into_owned());
        if kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        let refuse = |why: &str| UploadError::Refused {
            entry: raw.clone(),
            why: why.to_string(),
        };
        let parts = plain_parts(&path).map_err(refuse)?;
        match kind {
            tar::EntryType::Regular
            | tar::EntryType::Continuous
            | tar::EntryType::Directory
            | tar::EntryType::Symlink
            | tar::EntryType::Link => {}
            other => return Err(refuse(&format!("is of a refused type ({other:?})"))),
        }
        if parts.is_empty() && kind != tar::EntryType::Directory {
            return Err(refuse("has an empty path"));
        }
        entries.push((parts, raw, kind, link));
    }

    let symlinks: HashMap<Parts, PathBuf> = entries
        .iter()
        .filter(|e| e.2 == tar::EntryType::Symlink)
        .filter_map(|(p, _, _, l)| Some((p.clone(), l.clone()?)))
        .collect();
    let mut files: HashSet<Parts> = HashSet::new();
    for (parts, raw, kind, link) in &entries {
        let refuse = |why: String| UploadError::Refused {
            entry: raw.clone(),
            why,
        };
        let Some((_, parent)) = parts.split_last() else {
            continue; // the root directory itself
        };
        let parent = match resolve(&symlinks, Vec::new(), &join(parent), &mut 0) {
            Resolved::Inside(p) => p,
            Resolved::Outside => {
                return Err(refuse(
                    "lies below a symlink that leads outside the context".into(),
                ))
            }
            Resolved::Loop => {
                return Err(refuse("lies below a symlink loop".into()));
            }
        };
        match kind {
            tar::EntryType::Symlink => {
                let target = link
                    .as_ref()
                    .ok_or_else(|| refuse("is a symlink without a target".into()))?;
                if target.has_root() {
                    return Err(refuse(format!(
                        "is a symlink to the absolute path {target:?}, outside the context"
                    )));
                }
                if let Resolved::Outside = resolve(&symlinks, parent, target, &mut 0) {
                    return Err(refuse(format!(
                        "is a symlink to {target:?}, which leads outside the context"
                    )));
                }
            }
            tar::EntryType::Link => {
                let target = link
                    .as_ref()
                    .ok_or_else(|| refuse("is a hard link without a target".into()))?;
                let target_parts = plain_parts(target)
                    .map_err(|why| refuse(format!("is a hard link to {target:?}, which {why}")))?;
                if !files.contains(&target_parts) {
                    return Err(refuse(format!(
                        "is a hard link to {target:?}, which is not a file earlier in the upload"
                    )));
                }
            }
            _ => {}
        }
        if matches!(
            kind,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Link
        ) {
            files.insert(parts.clone());
        }
    }
    Ok(entries.len() as u64)
}

/// The normal components of a relative path; refuses absolute paths and `..`.
fn plain_parts(path: &Path) -> Result<Parts, &'static str> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err("contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    Ok(parts)
}

fn join(parts: &[String]) -> PathBuf {
    parts.iter().collect()
}

/// Resolves `rel` from the directory `start` (already resolved, relative to the context
/// root), following the archive's symlinks; `Outside` as soon as it climbs above the root.
fn resolve(
    symlinks: &HashMap<Parts, PathBuf>,
    start: Parts,
    rel: &Path,
    hops: &mut u32,
) -> Resolved {
    let mut stack = start;
    for c in rel.components() {
        match c {
            Component::Normal(s) => {
                stack.push(s.to_string_lossy().into_owned());
                if let Some(target) = symlinks.get(&stack) {
                    *hops += 1;
                    if *hops > MAX_HOPS {
                        return Resolved::Loop;
                    }
                    if target.has_root() {
                        return Resolved::Outside;
                    }
                    stack.pop();
                    match resolve(symlinks, stack, target, hops) {
                        Resolved::Inside(p) => stack = p,
                        other => return other,
                    }
                }
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if stack.pop().is_none() {
                    return Resolved::Outside;
                }
            }
            Component::RootDir | Component::Prefix(_) => return Resolved::Outside,
        }
    }
    Resolved::Inside(stack)
}
