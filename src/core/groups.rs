//! SearchGroups: the best groups of a search's hits, grouped by the value
//! at a payload key (the best chunk of each document, say).
//!
//! Built from the store's ordinary search, in rounds, the way Qdrant's own
//! `query_points_groups` works, so it answers the same on every backend
//! (the embedded engine has no grouping of its own). A round first finds
//! groups, leaving out groups already full and every hit already seen; once
//! the best `limit` groups are known (a group unseen after N hits can only
//! rank below the N-th hit), later rounds fill those that are not full yet.
//! Rounds stop when the groups are full, when a round finds nothing more,
//! or after [`MAX_ROUNDS`].

use std::collections::HashMap;

use crate::auth::Caller;
use crate::backend::TenantSearch;
use crate::error::Result;
use crate::model::{
    AnyOf, Condition, FieldTest, Filter, GroupKey, MemoryGroup, Payload, ScoredMemory,
    SearchGroupsRequest, Served,
};

use super::Core;

/// Store searches one grouped search may make.
const MAX_ROUNDS: usize = 5;
/// Hits one round may ask for.
const MAX_ROUND_HITS: usize = 1000;

impl Core {
    pub async fn search_groups(
        &self,
        caller: &Caller,
        req: SearchGroupsRequest,
    ) -> Result<Served<Vec<MemoryGroup>>> {
        self.admit(caller, &req)?;
        let namespace = req.search.namespace.clone();
        let consistency = req.search.consistency;
        let planned = self.plan_search(req.search.clone(), "search".into())?;
        let of = GroupsOf {
            count: planned.search.limit,
            size: req.group_size.max(1) as usize,
            key: req.group_by,
        };
        let key = || {
            self.cache
                .groups_key(&namespace, &planned.search, &of.key, of.size)
        };
        self.cache
            .get_or_load(key, consistency, || async {
                let search = self.with_query_vector(&namespace, &planned).await?;
                self.find_groups(&namespace, search, &of).await
            })
            .await
    }

    /// Runs `search` in rounds until its best groups are found and full
    /// (see the module docs). `search` has its query vector.
    async fn find_groups(
        &self,
        namespace: &str,
        search: TenantSearch,
        req: &GroupsOf,
    ) -> Result<Vec<MemoryGroup>> {
        let mut groups = Groups::new(req);
        for _ in 0..MAX_ROUNDS {
            let Some(round) = groups.next_round(&search) else {
                break;
            };
            let wanted = round.limit;
            let hits = self.search_one(namespace, round).await?;
            let exhausted = hits.len() < wanted;
            groups.add(hits);
            if exhausted {
                break;
            }
        }
        Ok(groups.best(search.with_payload))
    }
}

/// What a grouped search groups by: `count` groups of up to `size` hits
/// sharing the value at payload `key`.
#[derive(Debug, Clone)]
struct GroupsOf {
    count: usize,
    size: usize,
    key: String,
}

/// The groups found so far, in the order of their best hits.
struct Groups<'a> {
    of: &'a GroupsOf,
    found: Vec<MemoryGroup>,
    index: HashMap<GroupKey, usize>,
    seen: Vec<String>,
}

impl<'a> Groups<'a> {
    fn new(of: &'a GroupsOf) -> Self {
        Self {
            of,
            found: Vec::new(),
            index: HashMap::new(),
            seen: Vec::new(),
        }
    }

    fn is_full(&self, group: &MemoryGroup) -> bool {
        group.hits.len() >= self.of.size
    }

    /// The next round's search, or `None` when the best groups are full.
    fn next_round(&self, search: &TenantSearch) -> Option<TenantSearch> {
        let mut round = search.clone();
        round.with_payload = true;
        round.exclude_ids.extend(self.seen.iter().cloned());
        round.filter.must.push(self.condition(FieldTest::Exists));
        if self.found.len() < self.of.count {
            // Finding groups: the full ones are done.
            let full = self.found.iter().filter(|group| self.is_full(group));
            round.filter.must_not.extend(self.any_of(full));
            let missing = (self.of.count - self.found.len()) * self.of.size;
            round.limit = (missing * 2).max(search.limit).min(MAX_ROUND_HITS);
        } else {
            // Filling the best groups that are not full.
            let best = &self.found[..self.of.count];
            let unfilled: Vec<&MemoryGroup> =
                best.iter().filter(|group| !self.is_full(group)).collect();
            if unfilled.is_empty() {
                return None;
            }
            let missing: usize = unfilled
                .iter()
                .map(|group| self.of.size - group.hits.len())
                .sum();
            round.filter.must.push(Condition::Group(Filter {
                should: self.any_of(unfilled.into_iter()),
                ..Filter::default()
            }));
            round.limit = missing.min(MAX_ROUND_HITS);
        }
        Some(round)
    }

    fn condition(&self, test: FieldTest) -> Condition {
        Condition::Field {
            key: self.of.key.clone(),
            test,
        }
    }

    /// Conditions that together match the keys of `groups`.
    fn any_of<'g>(&self, groups: impl Iterator<Item = &'g MemoryGroup>) -> Vec<Condition> {
        let (mut keywords, mut integers) = (Vec::new(), Vec::new());
        for group in groups {
            match &group.key {
                GroupKey::Keyword(keyword) => keywords.push(keyword.clone()),
                GroupKey::Integer(integer) => integers.push(*integer),
            }
        }
        let mut conditions = Vec::new();
        if !keywords.is_empty() {
            conditions.push(self.condition(FieldTest::AnyOf(AnyOf::Keywords(keywords))));
        }
        if !integers.is_empty() {
            conditions.push(self.condition(FieldTest::AnyOf(AnyOf::Integers(integers))));
        }
        conditions
    }

    /// Puts each hit, best first, into its group if it has room.
    fn add(&mut self, hits: Vec<ScoredMemory>) {
        for hit in hits {
            self.seen.push(hit.memory.id.clone());
            let Some(key) = GroupKey::of(&hit.memory.payload, &self.of.key) else {
                continue;
            };
            match self.index.get(&key) {
                Some(&i) => {
                    if !self.is_full(&self.found[i]) {
                        self.found[i].hits.push(hit);
                    }
                }
                None => {
                    self.index.insert(key.clone(), self.found.len());
                    self.found.push(MemoryGroup {
                        key,
                        hits: vec![hit],
                    });
                }
            }
        }
    }

    /// The best groups, with payloads only if the caller asked for them.
    fn best(mut self, with_payload: bool) -> Vec<MemoryGroup> {
        self.found.truncate(self.of.count);
        if !with_payload {
            for hit in self.found.iter_mut().flat_map(|group| &mut group.hits) {
                hit.memory.payload = Payload::new();
            }
        }
        self.found
    }
}
