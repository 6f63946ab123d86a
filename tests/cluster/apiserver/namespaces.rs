//! Namespaces as the real server and its namespace controller keep them: content can only be
//! created in a namespace that exists and is not being deleted; deleting a namespace marks it
//! Terminating, deletes everything in it (finalizers and pods' grace periods still apply),
//! and removes it once it is empty.

use serde_json::{json, Value};

use super::registry::ResourceType;
use super::store::{meta_mut, ApiError, DeleteOptions, Deletion, EventType, Result, State};

fn namespaces(state: &State) -> ResourceType {
    state
        .registry
        .find("", "v1", "namespaces")
        .cloned()
        .expect("namespaces are served")
}

fn is_namespaces(rt: &ResourceType) -> bool {
    rt.group.is_empty() && rt.plural == "namespaces"
}

impl State {
    /// Refuses content for a namespace that does not exist (404) or is terminating (403).
    pub(super) fn check_namespace(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
    ) -> Result<()> {
        let nrt = namespaces(self);
        let namespace = self
            .get(&nrt, None, ns)
            .map_err(|_| ApiError::not_found(&nrt, ns))?;
        if namespace.pointer("/metadata/deletionTimestamp").is_some() {
            let msg = format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                rt.qualified()
            );
            return Err(ApiError::new(403, "Forbidden", msg));
        }
        Ok(())
    }

    fn namespace_is_empty(&self, ns: &str) -> bool {
        self.registry
            .types()
            .iter()
            .filter(|t| t.namespaced)
            .all(|t| {
                self.collections
                    .get(&t.key())
                    .is_none_or(|c| !c.objects.keys().any(|(o_ns, _)| o_ns == ns))
            })
    }

    /// DELETE of a namespace: Terminating, its content deleted, removed when empty.
    pub(super) fn delete_namespace(&mut self, name: &str) -> Result<Deletion> {
        let nrt = namespaces(self);
        let old = self.get(&nrt, None, name)?;
        let mut current = old.clone();
        if old.pointer("/metadata/deletionTimestamp").is_none() {
            let mut marked = old.clone();
            meta_mut(&mut marked).insert(
                "deletionTimestamp".into(),
                json!(super::store::now().to_string()),
            );
            meta_mut(&mut marked).insert("deletionGracePeriodSeconds".into(), json!(0));
            marked["status"] = json!({"phase": "Terminating"});
            let key = (String::new(), name.to_string());
            current = self.commit(&nrt, key, EventType::Modified, marked, Some(old));
        }
        let content: Vec<(ResourceType, String)> = self
            .registry
            .types()
            .iter()
            .filter(|t| t.namespaced)
            .flat_map(|t| {
                self.collections
                    .get(&t.key())
                    .into_iter()
                    .flat_map(|c| c.objects.keys())
                    .filter(|(o_ns, _)| o_ns == name)
                    .map(|(_, n)| (t.clone(), n.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (rt, object) in content {
            self.delete(&rt, Some(name), &object, &DeleteOptions::default())?;
        }
        match self.finish_namespace(name) {
            Some(gone) => Ok(Deletion::Gone(gone)),
            None => Ok(Deletion::Remains(
                self.get(&nrt, None, name).unwrap_or(current),
            )),
        }
    }

    /// Removes a terminating namespace once nothing is left in it.
    pub(super) fn finish_namespace(&mut self, ns: &str) -> Option<Value> {
        let nrt = namespaces(self);
        let namespace = self.get(&nrt, None, ns).ok()?;
        if namespace.pointer("/metadata/deletionTimestamp").is_none()
            || !self.namespace_is_empty(ns)
        {
            return None;
        }
        let key = (String::new(), ns.to_string());
        Some(self.commit(
            &nrt,
            key,
            EventType::Deleted,
            namespace.clone(),
            Some(namespace),
        ))
    }

    /// After an object is removed: its namespace may now be done terminating.
    pub(super) fn object_removed(&mut self, rt: &ResourceType, ns: &str) {
        if rt.namespaced && !is_namespaces(rt) && !ns.is_empty() {
            self.finish_namespace(ns);
        }
    }
}
