//! CORE: the cgroup tree (`docs/kernel.md` §8.2): directories, `cgroup.subtree_control`, tasks and
//! dmem csses.
//!
//! Modelling choices beyond `docs/kernel.md` §8.2 (all from cgroup-v2 core behaviour):
//! * A node's dmem css is an object of its own ([`Css`]): enabling `+dmem` in a parent creates one
//!   for every live child (and for children created later); `-dmem` and `rmdir` take it offline
//!   (limits reset like `dmemcs_offline`), but an offline css keeps its pools and stays in its
//!   parent's children list, so its charges remain in the ancestors and in the protection sums
//!   until uncharged (`docs/kernel.md` §3.2, T23). A later `+dmem` gives the child a fresh css with
//!   fresh pools.
//! * `dmem_css` of `docs/kernel.md` §8.2 is therefore "the node currently has an online css".
//! * `set_has_tasks(true)` on a non-root node with `dmem` in its `subtree_control` fails with
//!   `EBUSY` (the "no internal process" rule, as writing `cgroup.procs` would).
//! * Path syntax: absolute, `/`-separated; empty components are ignored (`"/k/"` = `"/k"`).

use std::collections::BTreeMap;

use crate::errno::Errno;
use crate::kernel::SimKernel;

/// Index of a node in the node arena.
pub(crate) type NodeId = usize;
/// Index of a css in the css arena.
pub(crate) type CssId = usize;

/// The root node and its css are always index 0.
pub(crate) const ROOT: usize = 0;

/// One cgroup directory.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// Absolute path, `/` for the root.
    pub path: String,
    pub parent: Option<NodeId>,
    /// Live children by name.
    pub children: BTreeMap<String, NodeId>,
    /// `"dmem"` is in this node's `cgroup.subtree_control`.
    pub subtree_dmem: bool,
    pub has_tasks: bool,
    /// The node's online dmem css, if any.
    pub css: Option<CssId>,
    /// False once removed by rmdir.
    pub alive: bool,
}

/// One dmem css (`struct dmemcg_state`).
#[derive(Debug, Clone)]
pub(crate) struct Css {
    /// The path of the node it belongs (or belonged) to.
    pub path: String,
    pub parent: Option<CssId>,
    /// Child csses in creation order, online or not.
    pub children: Vec<CssId>,
    pub online: bool,
}

/// Split a path into its components; `None` for a relative path.
pub(crate) fn components(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix('/')?;
    Some(rest.split('/').filter(|c| !c.is_empty()).collect())
}

fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

impl SimKernel {
    /// The live node at `path`.
    pub(crate) fn node_id(&self, path: &str) -> Result<NodeId, Errno> {
        let comps = components(path).ok_or(Errno::ENOENT)?;
        let mut id = ROOT;
        for c in comps {
            id = *self.nodes[id].children.get(c).ok_or(Errno::ENOENT)?;
        }
        Ok(id)
    }

    /// The css a task in `node` charges: the node's own, else the nearest ancestor's
    /// (`docs/kernel.md` §8.2).
    pub(crate) fn effective_css(&self, node: NodeId) -> CssId {
        let mut id = node;
        loop {
            if let Some(css) = self.nodes[id].css {
                return css;
            }
            match self.nodes[id].parent {
                Some(p) => id = p,
                None => return ROOT,
            }
        }
    }

    /// Create a fresh online css for `node` (whose parent must have one).
    fn attach_css(&mut self, node: NodeId) {
        let parent_css = self.nodes[node].parent.and_then(|p| self.nodes[p].css);
        let id = self.csses.len();
        self.csses.push(Css {
            path: self.nodes[node].path.clone(),
            parent: parent_css,
            children: Vec::new(),
            online: true,
        });
        if let Some(p) = parent_css {
            self.csses[p].children.push(id);
        }
        self.nodes[node].css = Some(id);
    }

    /// Take `node`'s css offline (`dmemcs_offline`: reset limits; pools and charges stay).
    fn detach_css(&mut self, node: NodeId) {
        if let Some(css) = self.nodes[node].css.take() {
            self.csses[css].online = false;
            self.reset_limits(css);
        }
    }

    /// Create the cgroup `path`. `EEXIST` if it (or a file of that name) exists, `ENOENT` if the
    /// parent does not, `EINVAL` for the root or a `.`/`..` name.
    pub fn mkdir(&mut self, path: &str) -> Result<(), Errno> {
        let comps = components(path).ok_or(Errno::ENOENT)?;
        let (name, parents) = comps.split_last().ok_or(Errno::EEXIST)?;
        if *name == "." || *name == ".." {
            return Err(Errno::EINVAL);
        }
        let mut parent = ROOT;
        for c in parents {
            parent = *self.nodes[parent].children.get(*c).ok_or(Errno::ENOENT)?;
        }
        if self.nodes[parent].children.contains_key(*name) || self.node_files(parent).contains(name)
        {
            return Err(Errno::EEXIST);
        }
        let id = self.nodes.len();
        let node_path = join(&self.nodes[parent].path, name);
        self.nodes.push(Node {
            path: node_path,
            parent: Some(parent),
            children: BTreeMap::new(),
            subtree_dmem: false,
            has_tasks: false,
            css: None,
            alive: true,
        });
        self.nodes[parent].children.insert((*name).to_string(), id);
        if self.nodes[parent].subtree_dmem && self.nodes[parent].css.is_some() {
            self.attach_css(id);
        }
        Ok(())
    }

    /// Remove the cgroup `path` (`docs/kernel.md` §8.2): `EBUSY` if it has tasks or children (or is
    /// the root); otherwise its pools' limits are reset and it disappears, while its charges stay
    /// in the ancestors until uncharged.
    pub fn rmdir(&mut self, path: &str) -> Result<(), Errno> {
        let id = self.node_id(path)?;
        let node = &self.nodes[id];
        let Some(parent) = node.parent else {
            return Err(Errno::EBUSY);
        };
        if node.has_tasks || !node.children.is_empty() {
            return Err(Errno::EBUSY);
        }
        self.detach_css(id);
        self.nodes[id].alive = false;
        let name = self.nodes[id]
            .path
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        self.nodes[parent].children.remove(&name);
        Ok(())
    }

    /// Mark whether the cgroup has member tasks (blocks rmdir and `+dmem`). `EBUSY` when adding
    /// tasks to a non-root cgroup that has `dmem` in its `subtree_control`.
    pub fn set_has_tasks(&mut self, path: &str, has: bool) -> Result<(), Errno> {
        let id = self.node_id(path)?;
        if has && id != ROOT && self.nodes[id].subtree_dmem {
            return Err(Errno::EBUSY);
        }
        self.nodes[id].has_tasks = has;
        Ok(())
    }

    /// Whether the cgroup `path` exists.
    pub fn exists(&self, path: &str) -> bool {
        self.node_id(path).is_ok()
    }

    /// The names of the live child cgroups of `path`, sorted.
    pub fn children(&self, path: &str) -> Result<Vec<String>, Errno> {
        let id = self.node_id(path)?;
        Ok(self.nodes[id].children.keys().cloned().collect())
    }

    /// Whether the cgroup `path` has its own (online) dmem css.
    pub fn has_dmem_css(&self, path: &str) -> bool {
        self.node_id(path)
            .is_ok_and(|id| self.nodes[id].css.is_some())
    }

    /// Apply the `+dmem`/`-dmem` outcome of a `cgroup.subtree_control` write (`docs/kernel.md`
    /// §8.2).
    pub(crate) fn set_subtree_dmem(&mut self, node: NodeId, enable: bool) -> Result<(), Errno> {
        let n = &self.nodes[node];
        if enable {
            if n.subtree_dmem {
                return Ok(());
            }
            if n.css.is_none() {
                return Err(Errno::ENOENT);
            }
            if node != ROOT && n.has_tasks {
                return Err(Errno::EBUSY);
            }
            self.nodes[node].subtree_dmem = true;
            if node == ROOT {
                self.root_files = true;
            }
            let kids: Vec<NodeId> = self.nodes[node].children.values().copied().collect();
            for k in kids {
                self.attach_css(k);
            }
        } else {
            if !n.subtree_dmem {
                return Ok(());
            }
            if n.children.values().any(|&c| self.nodes[c].subtree_dmem) {
                return Err(Errno::EBUSY);
            }
            self.nodes[node].subtree_dmem = false;
            let kids: Vec<NodeId> = self.nodes[node].children.values().copied().collect();
            for k in kids {
                self.detach_css(k);
            }
        }
        Ok(())
    }

    /// `css` followed by its ancestors up to the root css (self first).
    pub(crate) fn css_chain(&self, css: CssId) -> Vec<CssId> {
        let mut out = vec![css];
        let mut c = css;
        while let Some(p) = self.csses[c].parent {
            out.push(p);
            c = p;
        }
        out
    }

    /// Whether `anc` is `css` or one of its ancestors.
    pub(crate) fn css_is_ancestor(&self, anc: CssId, css: CssId) -> bool {
        self.css_chain(css).contains(&anc)
    }

    /// The nearest common ancestor of two csses (`dmem_cgroup_get_common_ancestor`).
    pub(crate) fn css_common_ancestor(&self, a: CssId, b: CssId) -> CssId {
        let chain_a = self.css_chain(a);
        self.css_chain(b)
            .into_iter()
            .find(|c| chain_a.contains(c))
            .unwrap_or(ROOT)
    }

    /// Pre-order list of `css` and all its descendants (online or not).
    pub(crate) fn css_preorder(&self, css: CssId) -> Vec<CssId> {
        let mut out = Vec::new();
        let mut stack = vec![css];
        while let Some(c) = stack.pop() {
            out.push(c);
            stack.extend(self.csses[c].children.iter().rev());
        }
        out
    }
}
