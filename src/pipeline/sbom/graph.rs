//! The dependency graph of one lockfile, as its parser builds it: a node per lockfile entry
//! (registry packages carry a [`Pinned`]; workspace members, path and git entries do not), the
//! edges the lockfile records, and the project's own requirements as roots. [`Builder::finish`]
//! derives each package's scope from the roots (a package is as required as the most required
//! path to it) and keeps only the edges between registry packages.

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::{Pinned, Scope};

/// What a parser found in one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub pins: Vec<Pinned>,
    /// `(from, to)` indexes into `pins`: `from` depends on `to`. Only meaningful with
    /// `has_graph`.
    pub edges: Vec<(usize, usize)>,
    /// Indexes into `pins` the project depends on directly (every pin when the file records no
    /// graph).
    pub direct: Vec<usize>,
    /// Whether the file records dependencies between packages (a package with no edges then
    /// has none, rather than unknown ones).
    pub has_graph: bool,
    /// Requirements the file names without an exact version (only manifests have these).
    pub unpinned: usize,
    /// Problems that did not stop the parse (a manifest beside the lockfile that could not be
    /// read, so scopes or direct dependencies are unknown).
    pub warnings: Vec<String>,
}

impl Parsed {
    /// A file that lists packages without relations: the project depends on each.
    pub fn flat(pins: Vec<Pinned>) -> Parsed {
        Parsed {
            direct: (0..pins.len()).collect(),
            pins,
            ..Parsed::default()
        }
    }
}

struct Node {
    pin: Option<Pinned>,
    /// The scope the lockfile states for this entry (npm `dev` flags, composer
    /// `packages-dev`); otherwise it is derived from the roots.
    stated: Option<Scope>,
}

#[derive(Default)]
pub struct Builder {
    nodes: Vec<Node>,
    /// `(from, to, kind)`: a `kind` other than `Required` makes everything reached through the
    /// edge at most that required (an optional dependency's subtree is optional).
    edges: Vec<(usize, usize, Scope)>,
    roots: Vec<(usize, Scope)>,
}

impl Builder {
    /// Adds an entry; `pin` is `None` for entries that are not registry packages.
    pub fn node(&mut self, pin: Option<Pinned>, stated: Option<Scope>) -> usize {
        self.nodes.push(Node { pin, stated });
        self.nodes.len() - 1
    }

    pub fn edge(&mut self, from: usize, to: usize, kind: Scope) {
        if from != to {
            self.edges.push((from, to, kind));
        }
    }

    /// The project itself requires `to` as `kind` (a dependency, an optional one, a dev one).
    pub fn root(&mut self, to: usize, kind: Scope) {
        self.roots.push((to, kind));
    }

    pub fn finish(self) -> Parsed {
        let n = self.nodes.len();
        let mut out_edges: Vec<Vec<(usize, Scope)>> = vec![Vec::new(); n];
        for &(from, to, kind) in &self.edges {
            out_edges[from].push((to, kind));
        }
        // The least scope over every path from a root: Required < Optional < Dev, and a path
        // is as weak as its weakest edge. Each node's scope only ever decreases, at most twice.
        let mut best: Vec<Option<Scope>> = vec![None; n];
        let mut queue = VecDeque::new();
        // Entries that are not registry packages and that nothing requires are the project
        // itself (workspace members, the root package): what they depend on is required.
        let mut required_by_something = vec![false; n];
        for &(_, to, _) in &self.edges {
            required_by_something[to] = true;
        }
        for &(to, _) in &self.roots {
            required_by_something[to] = true;
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if node.pin.is_none() && !required_by_something[i] {
                best[i] = Some(Scope::Required);
                queue.push_back(i);
            }
        }
        for &(to, kind) in &self.roots {
            if best[to].is_none_or(|b| kind < b) {
                best[to] = Some(kind);
                queue.push_back(to);
            }
        }
        while let Some(node) = queue.pop_front() {
            let here = best[node].unwrap_or(Scope::Required);
            for &(to, kind) in &out_edges[node] {
                let via = here.max(kind);
                if best[to].is_none_or(|b| via < b) {
                    best[to] = Some(via);
                    queue.push_back(to);
                }
            }
        }

        let mut pin_index: HashMap<usize, usize> = HashMap::new();
        let mut pins = Vec::new();
        for (i, node) in self.nodes.into_iter().enumerate() {
            if let Some(mut pin) = node.pin {
                pin.scope = node.stated.or(best[i]).unwrap_or(Scope::Required);
                pin_index.insert(i, pins.len());
                pins.push(pin);
            }
        }
        let mut edges = BTreeSet::new();
        let mut has_parent = vec![false; pins.len()];
        let mut direct = BTreeSet::new();
        for &(to, _) in &self.roots {
            if let Some(&p) = pin_index.get(&to) {
                direct.insert(p);
            }
        }
        for &(from, to, _) in &self.edges {
            let Some(&t) = pin_index.get(&to) else {
                continue;
            };
            match pin_index.get(&from) {
                Some(&f) => {
                    if f != t {
                        edges.insert((f, t));
                        has_parent[t] = true;
                    }
                }
                // Required by a workspace member, a path or a git entry: the project's own.
                None => {
                    direct.insert(t);
                }
            }
        }
        // Entries nothing in the file depends on still belong to the project.
        for (p, parent) in has_parent.iter().enumerate() {
            if !parent {
                direct.insert(p);
            }
        }
        Parsed {
            pins,
            edges: edges.into_iter().collect(),
            direct: direct.into_iter().collect(),
            has_graph: true,
            unpinned: 0,
            warnings: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::sbom::Ecosystem;

    fn p(name: &str) -> Option<Pinned> {
        Some(Pinned {
            ecosystem: Ecosystem::Npm,
            name: name.into(),
            version: "1.0.0".into(),
            line: 1,
            scope: Scope::Required,
        })
    }

    #[test]
    fn scope_is_the_most_required_path() {
        let mut b = Builder::default();
        let root = b.node(None, None);
        let a = b.node(p("a"), None);
        let d = b.node(p("d"), None);
        let shared = b.node(p("shared"), None);
        let opt = b.node(p("opt"), None);
        b.node(p("orphan"), Some(Scope::Dev));
        b.edge(root, a, Scope::Required);
        b.root(d, Scope::Dev);
        b.edge(d, shared, Scope::Required);
        b.edge(a, shared, Scope::Required);
        b.edge(a, opt, Scope::Optional);
        let parsed = b.finish();
        let scopes: Vec<(String, Scope)> = parsed
            .pins
            .iter()
            .map(|p| (p.name.clone(), p.scope))
            .collect();
        assert_eq!(
            scopes,
            vec![
                ("a".into(), Scope::Required),
                ("d".into(), Scope::Dev),
                ("shared".into(), Scope::Required),
                ("opt".into(), Scope::Optional),
                ("orphan".into(), Scope::Dev),
            ]
        );
        assert_eq!(parsed.edges, vec![(0, 2), (0, 3), (1, 2)]);
        // a (workspace root), d (root), orphan (no parent).
        assert_eq!(parsed.direct, vec![0, 1, 4]);
    }
}
