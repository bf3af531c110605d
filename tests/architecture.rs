//! The layout the README states, held by tests that read the source with `syn`:
//!
//! - **Pure core.** The modules in [`PURE`] (the API types and their logic, the analysis math
//!   with the replay fold, the routers' arithmetic, and the rollout core) reach no I/O and no
//!   clock: no Kubernetes client or runtime, no tokio, no HTTP, no file, network, process,
//!   environment or thread access, no `now()` or `elapsed()`, no `async`, no printing or
//!   logging, and nothing of the shell (`crate::controller`, `crate::cli`). `kube::CustomResource`
//!   and the `kube::core` types are plain data and allowed. Test code (`#[cfg(test)]`) is not
//!   checked.
//! - **No import circles**, between the top-level modules (`api`, `analysis`, …) and between the
//!   files of one module. A module root naming its own children (declaring, re-exporting,
//!   calling them) is structure, not an edge; a child using its parent root's items is an edge
//!   to the root, which has no edges back at that level, so circles run between siblings.
//!
//! Each check is also tested on small bad crates, so a checker that reports nothing is caught.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::visit::{self, Visit};

/// The top-level modules that must stay pure (see the module docs).
const PURE: [&str; 4] = ["api", "analysis", "traffic", "rollout"];

/// Files of the shell that hold pure logic, checked like the pure modules: the notifier's
/// configuration parsing, target selection, messages and condition (its sender is the I/O).
/// They may use one another, and the pure modules, but nothing else of the shell.
const PURE_IN_SHELL: [&[&str]; 5] = [
    &["controller", "notify", "transition"],
    &["controller", "notify", "config"],
    &["controller", "notify", "select"],
    &["controller", "notify", "message"],
    &["controller", "notify", "condition"],
];

/// Whether the module path `module` is (inside) one of [`PURE_IN_SHELL`].
fn pure_in_shell(module: &[String]) -> bool {
    PURE_IN_SHELL.iter().any(|pure| {
        module.len() >= pure.len() && module.iter().zip(pure.iter()).all(|(a, b)| a == b)
    })
}

/// The shell's top-level modules: the pure ones may not reach them.
const SHELL: [&str; 2] = ["controller", "cli"];

/// Paths (by leading segments) the pure modules may not use, and why.
const FORBIDDEN_PATHS: &[(&[&str], &str)] = &[
    (&["tokio"], "the async runtime"),
    (&["futures"], "async plumbing"),
    (&["reqwest"], "an HTTP client"),
    (&["hyper"], "an HTTP client"),
    (&["axum"], "an HTTP server"),
    (&["tower"], "a network service stack"),
    (&["prometheus_http_query"], "the Prometheus client"),
    (&["kube_lease_manager"], "leader election"),
    (&["kube", "Client"], "the Kubernetes client"),
    (&["kube", "client"], "the Kubernetes client"),
    (&["kube", "Api"], "the Kubernetes client"),
    (&["kube", "api", "Api"], "the Kubernetes client"),
    (&["kube", "Config"], "the Kubernetes client's configuration"),
    (&["kube", "config"], "the Kubernetes client's configuration"),
    (
        &["kube", "runtime"],
        "the Kubernetes runtime (watches, controller, events)",
    ),
    (&["std", "fs"], "the file system"),
    (&["std", "net"], "the network"),
    (&["std", "process"], "processes"),
    (&["std", "env"], "the environment"),
    (&["std", "thread"], "threads"),
    (&["std", "io"], "I/O streams"),
    (&["tracing"], "logging (log lines come from the shell)"),
    (&["log"], "logging (log lines come from the shell)"),
];

/// Calls that read a clock, by the path's last segment (`Timestamp::now`, `Instant::now`,
/// `Utc::now`, `Zoned::now`, `OffsetDateTime::now_utc`, `SystemTime::now`, ...).
const CLOCK_CALLS: [&str; 3] = ["now", "now_utc", "now_local"];

/// Macros that write to stdout or stderr.
const PRINTING_MACROS: [&str; 5] = ["println", "eprintln", "print", "eprint", "dbg"];

/// One source file of the crate, with its module path (`["analysis", "judge"]`).
struct SourceFile {
    path: String,
    module: Vec<String>,
    ast: syn::File,
}

/// Something a file does that it must not: `src/rollout/mod.rs:12: Timestamp::now reads the clock`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    file: String,
    line: usize,
    what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.what)
    }
}

/// Where an edge of the import graph comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Location {
    file: String,
    line: usize,
}

/// The crate's library source: every file but `main.rs` and the test-only modules.
struct Crate {
    files: Vec<SourceFile>,
    /// Every module of the crate that is not test-only.
    modules: BTreeSet<Vec<String>>,
    /// `(module, name)` to the absolute path a `use` in that module brings in under `name`.
    imports: BTreeMap<(Vec<String>, String), Vec<String>>,
}

impl Crate {
    /// Reads `src/` of this package.
    fn read() -> Crate {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut sources = Vec::new();
        collect(&root.join("src"), root, &mut sources);
        Crate::from_sources(
            sources
                .iter()
                .map(|(path, text)| (path.as_str(), text.as_str())),
        )
    }

    /// A crate from `(path, text)` pairs, paths as `src/...`.
    fn from_sources<'a>(sources: impl IntoIterator<Item = (&'a str, &'a str)>) -> Crate {
        let mut files: Vec<SourceFile> = sources
            .into_iter()
            .filter(|(path, _)| *path != "src/main.rs")
            .map(|(path, text)| SourceFile {
                path: path.to_string(),
                module: module_of_file(path),
                ast: syn::parse_file(text).unwrap_or_else(|error| {
                    panic!(
                        "{path}:{}: cannot parse: {error}",
                        error.span().start().line
                    )
                }),
            })
            .collect();
        let test_only: BTreeSet<Vec<String>> = files
            .iter()
            .flat_map(|file| {
                file.ast.items.iter().filter_map(|item| match item {
                    syn::Item::Mod(module)
                        if module.content.is_none() && is_test_only(&module.attrs) =>
                    {
                        let mut path = file.module.clone();
                        path.push(module.ident.to_string());
                        Some(path)
                    }
                    _ => None,
                })
            })
            .collect();
        files.retain(|file| !test_only.iter().any(|test| file.module.starts_with(test)));
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let modules: BTreeSet<Vec<String>> = files.iter().map(|file| file.module.clone()).collect();
        let mut imports = BTreeMap::new();
        for file in &files {
            for item in &file.ast.items {
                if let syn::Item::Use(item_use) = item
                    && !is_test_only(&item_use.attrs)
                {
                    let mut named = Vec::new();
                    use_tree_names(&item_use.tree, &mut Vec::new(), &mut named);
                    for (name, path) in named {
                        if let Some(absolute) = resolve(&modules, &file.module, &path) {
                            imports.insert((file.module.clone(), name), absolute);
                        }
                    }
                }
            }
        }
        Crate {
            files,
            modules,
            imports,
        }
    }

    /// The module an absolute path lands in, following `use`s (re-exports) so that an item a
    /// module root re-exports is attributed to the file that defines it.
    fn module_of(&self, path: &[String]) -> Vec<String> {
        let mut path = path.to_vec();
        for _ in 0..8 {
            let known = (0..=path.len())
                .rev()
                .map(|length| path[..length].to_vec())
                .find(|prefix| self.modules.contains(prefix))
                .unwrap_or_default();
            let Some(next) = path.get(known.len()) else {
                return known;
            };
            match self.imports.get(&(known.clone(), next.clone())) {
                Some(source) if source != &path[..=known.len()] => {
                    let mut followed = source.clone();
                    followed.extend_from_slice(&path[known.len() + 1..]);
                    path = followed;
                }
                _ => return known,
            }
        }
        path
    }

    /// Every I/O, clock or shell use in the pure modules.
    fn purity_violations(&self) -> Vec<Violation> {
        let mut violations = Vec::new();
        for file in self.pure_files() {
            let mut visitor = Visitor::new(file);
            visitor.visit_file(&file.ast);
            for reference in &visitor.references {
                if let Some(why) = forbidden(&reference.segments) {
                    violations.push(file.violation(reference.line, why));
                } else if let Some(absolute) =
                    resolve(&self.modules, &reference.module, &reference.segments)
                    && !pure_in_shell(&absolute)
                    && let Some(shell) = absolute
                        .first()
                        .filter(|first| SHELL.contains(&first.as_str()))
                {
                    violations.push(file.violation(
                        reference.line,
                        format!("{} reaches the shell (crate::{shell})", reference.text()),
                    ));
                }
            }
            violations.extend(
                visitor
                    .effects
                    .iter()
                    .map(|(line, what)| file.violation(*line, what.clone())),
            );
        }
        violations.sort();
        violations.dedup();
        violations
    }

    /// The files of the pure modules.
    fn pure_files(&self) -> impl Iterator<Item = &SourceFile> {
        self.files.iter().filter(|file| {
            file.module
                .first()
                .is_some_and(|top| PURE.contains(&top.as_str()))
                || pure_in_shell(&file.module)
        })
    }

    /// The import graph: an edge between two sibling modules (or from a module to its parent's
    /// root) for every path from one to the other, with the first place it is written.
    fn edges(&self) -> BTreeMap<(Vec<String>, Vec<String>), Location> {
        let mut edges = BTreeMap::new();
        for file in &self.files {
            let mut visitor = Visitor::new(file);
            visitor.visit_file(&file.ast);
            for reference in &visitor.references {
                let Some(absolute) = resolve(&self.modules, &reference.module, &reference.segments)
                else {
                    continue;
                };
                let target = self.module_of(&absolute);
                let from = &reference.module;
                let common = from.iter().zip(&target).take_while(|(a, b)| a == b).count();
                // A module root (or an ancestor) naming what is inside it is structure.
                if common == from.len() {
                    continue;
                }
                // The parent root's own items: the root has no edges back at this level.
                if common == target.len() {
                    continue;
                }
                edges
                    .entry((from[..=common].to_vec(), target[..=common].to_vec()))
                    .or_insert(Location {
                        file: file.path.clone(),
                        line: reference.line,
                    });
            }
        }
        edges
    }

    /// Every import circle, each as `a -> b (file:line) -> ... -> a` lines.
    fn cycles(&self) -> Vec<String> {
        let edges = self.edges();
        let mut next: BTreeMap<&Vec<String>, Vec<&Vec<String>>> = BTreeMap::new();
        for (from, to) in edges.keys() {
            next.entry(from).or_default().push(to);
        }
        let mut reported: BTreeSet<BTreeSet<&Vec<String>>> = BTreeSet::new();
        let mut cycles = Vec::new();
        for start in next.keys() {
            // The shortest way back to `start`, breadth first.
            let mut came_from: BTreeMap<&Vec<String>, &Vec<String>> = BTreeMap::new();
            let mut queue = VecDeque::from([*start]);
            let mut closing = None;
            while let Some(node) = queue.pop_front() {
                for &target in next.get(node).into_iter().flatten() {
                    if target == *start {
                        closing = Some(node);
                        break;
                    }
                    if !came_from.contains_key(target) {
                        came_from.insert(target, node);
                        queue.push_back(target);
                    }
                }
                if closing.is_some() {
                    break;
                }
            }
            let Some(mut node) = closing else { continue };
            let mut path = vec![node];
            while node != *start {
                node = came_from[node];
                path.push(node);
            }
            path.reverse();
            let members: BTreeSet<&Vec<String>> = path.iter().copied().collect();
            if !reported.insert(members) {
                continue;
            }
            let mut text = name(start);
            for (index, from) in path.iter().enumerate() {
                let to = path.get(index + 1).copied().unwrap_or(*start);
                let at = &edges[&((*from).clone(), to.clone())];
                text.push_str(&format!(" -> {} ({}:{})", name(to), at.file, at.line));
            }
            cycles.push(text);
        }
        cycles
    }
}

impl SourceFile {
    fn violation(&self, line: usize, what: String) -> Violation {
        Violation {
            file: self.path.clone(),
            line,
            what,
        }
    }
}

/// A path written in a file, in the module it is written in.
struct Reference {
    module: Vec<String>,
    segments: Vec<String>,
    line: usize,
}

impl Reference {
    fn text(&self) -> String {
        self.segments.join("::")
    }
}

/// Collects every path of a file (in `use` trees, code, types and macro bodies) and the
/// effects that are not paths (`async`, `.await`, `.elapsed()`, printing macros), skipping
/// `#[cfg(test)]` items and visibility paths (`pub(in crate::rollout)` names no dependency).
struct Visitor {
    module: Vec<String>,
    references: Vec<Reference>,
    effects: Vec<(usize, String)>,
}

impl Visitor {
    fn new(file: &SourceFile) -> Visitor {
        Visitor {
            module: file.module.clone(),
            references: Vec::new(),
            effects: Vec::new(),
        }
    }

    fn reference(&mut self, segments: Vec<String>, span: Span) {
        if !segments.is_empty() {
            self.references.push(Reference {
                module: self.module.clone(),
                segments,
                line: span.start().line,
            });
        }
    }

    fn effect(&mut self, span: Span, what: &str) {
        self.effects.push((span.start().line, what.to_string()));
    }
}

impl<'ast> Visit<'ast> for Visitor {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if !item_attrs(item).is_some_and(is_test_only) {
            visit::visit_item(self, item);
        }
    }

    fn visit_item_mod(&mut self, module: &'ast syn::ItemMod) {
        if module.content.is_some() {
            self.module.push(module.ident.to_string());
            visit::visit_item_mod(self, module);
            self.module.pop();
        }
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        let attrs = match item {
            syn::ImplItem::Const(item) => &item.attrs,
            syn::ImplItem::Fn(item) => &item.attrs,
            syn::ImplItem::Type(item) => &item.attrs,
            syn::ImplItem::Macro(item) => &item.attrs,
            _ => return visit::visit_impl_item(self, item),
        };
        if !is_test_only(attrs) {
            visit::visit_impl_item(self, item);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let mut paths = Vec::new();
        use_tree_paths(&item.tree, &mut Vec::new(), &mut paths);
        for (segments, span) in paths {
            self.reference(segments, span);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments = path.segments.iter().map(|s| s.ident.to_string()).collect();
        let span = path
            .segments
            .first()
            .map_or_else(Span::call_site, |s| s.ident.span());
        self.reference(segments, span);
        visit::visit_path(self, path);
    }

    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        if let Some(last) = mac.path.segments.last()
            && PRINTING_MACROS.contains(&last.ident.to_string().as_str())
        {
            self.effect(
                last.ident.span(),
                &format!("{}! writes to the terminal", last.ident),
            );
        }
        let mut paths = Vec::new();
        token_paths(mac.tokens.clone(), &mut paths);
        for (segments, span) in paths {
            self.reference(segments, span);
        }
        visit::visit_macro(self, mac);
    }

    fn visit_signature(&mut self, signature: &'ast syn::Signature) {
        if let Some(token) = &signature.asyncness {
            self.effect(token.span, &format!("async fn {}", signature.ident));
        }
        visit::visit_signature(self, signature);
    }

    fn visit_expr_async(&mut self, expr: &'ast syn::ExprAsync) {
        self.effect(expr.async_token.span, "an async block");
        visit::visit_expr_async(self, expr);
    }

    fn visit_expr_await(&mut self, expr: &'ast syn::ExprAwait) {
        self.effect(expr.await_token.span, ".await");
        visit::visit_expr_await(self, expr);
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        if call.method == "elapsed" {
            self.effect(call.method.span(), ".elapsed() reads the clock");
        }
        visit::visit_expr_method_call(self, call);
    }
}

/// Why a path must not appear in pure code, if it must not.
fn forbidden(segments: &[String]) -> Option<String> {
    let path = segments.join("::");
    for (prefix, why) in FORBIDDEN_PATHS {
        if segments.len() >= prefix.len() && segments.iter().zip(prefix.iter()).all(|(a, b)| a == b)
        {
            return Some(format!("{path} is {why}"));
        }
    }
    let last = segments.last()?;
    if segments.len() >= 2 && CLOCK_CALLS.contains(&last.as_str()) {
        return Some(format!("{path} reads the clock"));
    }
    if segments.iter().any(|segment| segment == "SystemTime") {
        return Some(format!("{path} is the wall clock"));
    }
    None
}

/// The absolute path (`["analysis", "judge", ...]`) a path written in `module` names, or
/// `None` for a path into another crate or a local name. A path may start with `crate`,
/// `self`, `super`, or the name of one of `module`'s own children (`use judge::judge;` in a
/// module root).
fn resolve(
    modules: &BTreeSet<Vec<String>>,
    module: &[String],
    segments: &[String],
) -> Option<Vec<String>> {
    let first = segments.first()?;
    let child = [module, std::slice::from_ref(first)].concat();
    let (mut base, rest) = match first.as_str() {
        "crate" => (Vec::new(), &segments[1..]),
        "self" => (module.to_vec(), &segments[1..]),
        "super" => (module.to_vec(), segments),
        _ if modules.contains(&child) => (module.to_vec(), segments),
        _ => return None,
    };
    let mut rest = rest;
    while rest.first().is_some_and(|s| s == "super") {
        base.pop();
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// Every full path of a `use` tree (`use a::{b, c::d}` is `a::b` and `a::c::d`).
fn use_tree_paths(
    tree: &syn::UseTree,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Span)>,
) {
    match tree {
        syn::UseTree::Path(path) => {
            prefix.push(path.ident.to_string());
            use_tree_paths(&path.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(name) => {
            let mut full = prefix.clone();
            if name.ident != "self" {
                full.push(name.ident.to_string());
            }
            out.push((full, name.ident.span()));
        }
        syn::UseTree::Rename(rename) => {
            let mut full = prefix.clone();
            if rename.ident != "self" {
                full.push(rename.ident.to_string());
            }
            out.push((full, rename.ident.span()));
        }
        syn::UseTree::Glob(glob) => out.push((prefix.clone(), glob.star_token.span)),
        syn::UseTree::Group(group) => {
            for tree in &group.items {
                use_tree_paths(tree, prefix, out);
            }
        }
    }
}

/// The names a `use` tree brings into scope, with the path each names.
fn use_tree_names(
    tree: &syn::UseTree,
    prefix: &mut Vec<String>,
    out: &mut Vec<(String, Vec<String>)>,
) {
    match tree {
        syn::UseTree::Path(path) => {
            prefix.push(path.ident.to_string());
            use_tree_names(&path.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(name) if name.ident == "self" => {
            if let Some(last) = prefix.last() {
                out.push((last.clone(), prefix.clone()));
            }
        }
        syn::UseTree::Name(name) => {
            let mut full = prefix.clone();
            full.push(name.ident.to_string());
            out.push((name.ident.to_string(), full));
        }
        syn::UseTree::Rename(rename) => {
            let mut full = prefix.clone();
            if rename.ident != "self" {
                full.push(rename.ident.to_string());
            }
            out.push((rename.rename.to_string(), full));
        }
        syn::UseTree::Glob(_) => {}
        syn::UseTree::Group(group) => {
            for tree in &group.items {
                use_tree_names(tree, prefix, out);
            }
        }
    }
}

/// Every `a::b::c` path in a macro's tokens (the compiler has not parsed them yet).
fn token_paths(tokens: TokenStream, out: &mut Vec<(Vec<String>, Span)>) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut index = 0;
    while index < tokens.len() {
        match &tokens[index] {
            TokenTree::Group(group) => {
                token_paths(group.stream(), out);
                index += 1;
            }
            TokenTree::Ident(first) => {
                let mut segments = vec![first.to_string()];
                let mut end = index + 1;
                while let (
                    Some(TokenTree::Punct(a)),
                    Some(TokenTree::Punct(b)),
                    Some(TokenTree::Ident(next)),
                ) = (tokens.get(end), tokens.get(end + 1), tokens.get(end + 2))
                {
                    if a.as_char() != ':' || b.as_char() != ':' {
                        break;
                    }
                    segments.push(next.to_string());
                    end += 3;
                }
                if segments.len() > 1 {
                    out.push((segments, first.span()));
                }
                index = end;
            }
            _ => index += 1,
        }
    }
}

/// Whether the attributes make an item test-only (`#[cfg(test)]`).
fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Meta>()
                .is_ok_and(|meta| meta.path().is_ident("test"))
    })
}

fn item_attrs(item: &syn::Item) -> Option<&[syn::Attribute]> {
    Some(match item {
        syn::Item::Const(item) => &item.attrs,
        syn::Item::Enum(item) => &item.attrs,
        syn::Item::ExternCrate(item) => &item.attrs,
        syn::Item::Fn(item) => &item.attrs,
        syn::Item::ForeignMod(item) => &item.attrs,
        syn::Item::Impl(item) => &item.attrs,
        syn::Item::Macro(item) => &item.attrs,
        syn::Item::Mod(item) => &item.attrs,
        syn::Item::Static(item) => &item.attrs,
        syn::Item::Struct(item) => &item.attrs,
        syn::Item::Trait(item) => &item.attrs,
        syn::Item::TraitAlias(item) => &item.attrs,
        syn::Item::Type(item) => &item.attrs,
        syn::Item::Union(item) => &item.attrs,
        syn::Item::Use(item) => &item.attrs,
        _ => return None,
    })
}

/// `src/analysis/judge.rs` is `["analysis", "judge"]`; `src/analysis/mod.rs` is `["analysis"]`.
fn module_of_file(path: &str) -> Vec<String> {
    let inner = path
        .strip_prefix("src/")
        .and_then(|p| p.strip_suffix(".rs"))
        .unwrap_or(path);
    let mut segments: Vec<String> = inner.split('/').map(String::from).collect();
    if matches!(segments.last().map(String::as_str), Some("mod" | "lib")) {
        segments.pop();
    }
    segments
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

fn collect(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, root, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let relative = path
                .strip_prefix(root)
                .expect("under the package")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("cannot read {relative}: {error}"));
            out.push((relative, text));
        }
    }
}

#[test]
fn the_pure_modules_reach_no_io_no_clock_and_no_shell() {
    let source = Crate::read();
    for pure in PURE {
        assert!(
            source.pure_files().any(|file| file.module[0] == pure),
            "no file of src/{pure}/ was checked: update PURE (and the README's Layout) when a \
             pure module moves"
        );
    }
    for pure in PURE_IN_SHELL {
        assert!(
            source.pure_files().any(|file| file.module == pure),
            "src/{}.rs was not checked: update PURE_IN_SHELL when it moves",
            pure.join("/")
        );
    }
    let violations = source.purity_violations();
    assert!(
        violations.is_empty(),
        "the pure modules ({}) must not do I/O, read the clock or reach the shell; move this to \
         src/controller/ (or src/cli/) and pass the result in as a value:\n{}",
        PURE.join(", "),
        violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn no_module_imports_another_in_a_circle() {
    let cycles = Crate::read().cycles();
    assert!(
        cycles.is_empty(),
        "import circles (move what both sides need into a module both can import):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_purity_check_names_file_and_line_of_each_io_or_clock_use() {
    let rollout = "\
use kube::{Api, CustomResource};
use kube::core::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
pub fn decide() -> Timestamp { Timestamp::now() }
pub async fn wait() {}
pub fn home() -> String { format!(\"{:?}\", std::env::var(\"HOME\")) }
pub fn age(at: std::time::Instant) -> u64 { at.elapsed().as_secs() }
pub fn shout() { println!(\"hello\") }
use super::controller::Context;
pub(in crate::rollout) fn fine(meta: &ObjectMeta) -> bool { meta.name.is_some() }
#[cfg(test)]
mod tests {
    use tokio::time::sleep;
    fn clock() { let _ = std::time::Instant::now(); }
}
";
    let source = Crate::from_sources([
        ("src/lib.rs", "pub mod controller;\npub mod rollout;\n"),
        ("src/rollout/mod.rs", rollout),
        (
            "src/controller/mod.rs",
            "pub fn now() -> std::time::SystemTime { std::time::SystemTime::now() }\n",
        ),
    ]);
    let found: Vec<String> = source
        .purity_violations()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        found,
        [
            "src/rollout/mod.rs:1: kube::Api is the Kubernetes client",
            "src/rollout/mod.rs:4: Timestamp::now reads the clock",
            "src/rollout/mod.rs:5: async fn wait",
            "src/rollout/mod.rs:6: std::env::var is the environment",
            "src/rollout/mod.rs:7: .elapsed() reads the clock",
            "src/rollout/mod.rs:8: println! writes to the terminal",
            "src/rollout/mod.rs:9: super::controller::Context reaches the shell (crate::controller)",
        ],
        "kube::CustomResource, kube::core, a visibility path, test code and the shell itself are fine"
    );
}

#[test]
fn the_cycle_check_reports_each_circle_with_the_lines_that_make_it() {
    let source = Crate::from_sources([
        (
            "src/lib.rs",
            "pub mod a;\npub mod b;\npub mod c;\npub mod m;\n",
        ),
        ("src/a.rs", "use crate::b::B;\npub struct A(B);\n"),
        ("src/b.rs", "pub struct B;\npub fn f() { crate::c::g() }\n"),
        (
            "src/c.rs",
            "pub fn g() {}\n\npub fn h() -> crate::a::A { todo!() }\n",
        ),
        (
            "src/m/mod.rs",
            "pub mod x;\npub mod y;\npub mod z;\npub use x::X;\npub struct Root;\n\
             pub fn make() -> Root { z::build() }\n",
        ),
        ("src/m/x.rs", "use super::y::Y;\npub struct X(Y);\n"),
        // Through the root's re-export of x::X: still y -> x.
        ("src/m/y.rs", "pub struct Y;\npub fn f(_: super::X) {}\n"),
        // A child using its root's own item while the root calls it: no circle.
        (
            "src/m/z.rs",
            "pub fn build() -> super::Root { super::Root }\n",
        ),
    ]);
    assert_eq!(
        source.cycles(),
        [
            "a -> b (src/a.rs:1) -> c (src/b.rs:2) -> a (src/c.rs:3)",
            "m::x -> m::y (src/m/x.rs:1) -> m::x (src/m/y.rs:2)",
        ]
    );
}

#[test]
fn test_only_modules_are_neither_checked_nor_part_of_the_graph() {
    let source = Crate::from_sources([
        (
            "src/lib.rs",
            "pub mod a;\npub mod b;\n#[cfg(test)]\nmod fixtures;\n",
        ),
        (
            "src/a.rs",
            "pub fn f() {}\n#[cfg(test)]\nmod tests { use crate::b::g; }\n",
        ),
        ("src/b.rs", "pub fn g() { crate::a::f() }\n"),
        (
            "src/fixtures.rs",
            "use crate::a::f;\nuse crate::b::g;\npub fn now() { std::fs::read(\"x\"); }\n",
        ),
    ]);
    assert!(source.cycles().is_empty(), "{:?}", source.cycles());
    assert!(
        source
            .files
            .iter()
            .all(|file| file.path != "src/fixtures.rs")
    );
}
