//! Renders the Helm chart in `charts/waymark` without a `helm` binary, for tests.
//!
//! Include it from any test crate with `#[path = "support/chart.rs"] mod chart;` (adjust the
//! path; the e2e suite can use `#[path = "../tests/support/chart.rs"]`). It depends only on
//! crates Waymark already has: serde_yaml, serde_json and jsonschema.
//!
//! - [`render_chart`] renders every template for the given values (merged over `values.yaml`
//!   the way `helm install -f` merges them), after validating them against
//!   `values.schema.json` as Helm does, and returns each rendered document as YAML.
//! - [`write_rendered`] writes documents to a directory under Cargo's target directory, so a
//!   later step (`kubectl apply --dry-run=server -f`) can apply exactly what the tests checked.
//!
//! It implements the Go-template constructs the chart uses and no others: `{{ .Values.x }}`,
//! `.Release.Name|Namespace|Service`, `.Chart.Name|Version|AppVersion`, `$` (the root), `.`,
//! `{{- -}}` trimming, `{{/* */}}` comments, `define`, `include`, `if`/`else if`/`else`,
//! `with`, `range` over lists and maps, `.Files.Get`, parenthesised sub-pipelines, and the
//! functions `toYaml`, `nindent`, `indent`, `default`, `quote`, `printf` (`%s`, `%d`, `%v`),
//! `int`, `contains`, `not`, `and`, `or`, `eq`, `ne`, `gt`, `ge`, `lt`, `le`. Anything else is an
//! error naming the file, so a template that would need a real `helm` fails the tests instead
//! of being rendered wrong.

#![allow(dead_code)] // Each including test crate uses a different part.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/waymark")
}

/// The Helm release name the tests install as.
pub const RELEASE_NAME: &str = "waymark";
/// The namespace the tests install into.
pub const RELEASE_NAMESPACE: &str = "waymark-system";

/// Every document the chart renders for `overrides` (merged over `values.yaml`), installed as
/// release `waymark` in namespace `waymark-system`. Panics with the reason when the values are
/// invalid or a template cannot be rendered.
pub fn render_chart(overrides: &Value) -> Vec<Value> {
    render_chart_as(RELEASE_NAME, RELEASE_NAMESPACE, overrides)
        .unwrap_or_else(|error| panic!("the chart does not render: {error}"))
}

/// [`render_chart`] with another release name and namespace, returning errors.
pub fn render_chart_as(
    release_name: &str,
    namespace: &str,
    overrides: &Value,
) -> Result<Vec<Value>, String> {
    let values = merged_values(overrides)?;
    let problems = schema_problems(&values)?;
    if !problems.is_empty() {
        return Err(format!(
            "values rejected by values.schema.json: {}",
            problems.join("; ")
        ));
    }
    let chart: Value = serde_yaml::from_str(&read(&chart_dir().join("Chart.yaml"))?)
        .map_err(|error| format!("Chart.yaml: {error}"))?;
    let mut chart_fields = Mapping::new();
    for (field, key) in [
        ("Name", "name"),
        ("Version", "version"),
        ("AppVersion", "appVersion"),
    ] {
        chart_fields.insert(field.into(), chart[key].clone());
    }
    let mut release = Mapping::new();
    release.insert("Name".into(), release_name.into());
    release.insert("Namespace".into(), namespace.into());
    release.insert("Service".into(), "Helm".into());
    let mut root = Mapping::new();
    root.insert("Values".into(), values);
    root.insert("Release".into(), Value::Mapping(release));
    root.insert("Chart".into(), Value::Mapping(chart_fields));
    let root = Value::Mapping(root);

    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("templates"))
        .map_err(|error| format!("templates/: {error}"))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect();
    files.sort();
    let mut parsed = Vec::new();
    let mut defines = HashMap::new();
    for file in &files {
        let name = file_name(file);
        let nodes =
            parse(&read(file)?, &mut defines).map_err(|error| format!("{name}: {error}"))?;
        parsed.push((name, nodes));
    }
    let engine = Engine { defines };
    let mut documents = Vec::new();
    for (name, nodes) in parsed {
        // Files starting with `_` hold only definitions, as in Helm.
        if name.starts_with('_') {
            continue;
        }
        let text = engine
            .render(&nodes, &root, &root)
            .map_err(|error| format!("templates/{name}: {error}"))?;
        for document in split_documents(&text) {
            let value: Value = serde_yaml::from_str(&document).map_err(|error| {
                format!("templates/{name} renders invalid YAML ({error}):\n{document}")
            })?;
            if !value.is_null() {
                documents.push(value);
            }
        }
    }
    Ok(documents)
}

/// `values.yaml` with `overrides` merged over it: maps merge key by key, anything else
/// replaces; `Value::Null` overrides nothing.
pub fn merged_values(overrides: &Value) -> Result<Value, String> {
    let defaults: Value = serde_yaml::from_str(&read(&chart_dir().join("values.yaml"))?)
        .map_err(|error| format!("values.yaml: {error}"))?;
    Ok(merge(defaults, overrides))
}

fn merge(base: Value, over: &Value) -> Value {
    match (base, over) {
        (Value::Mapping(mut base), Value::Mapping(over)) => {
            for (key, value) in over {
                let merged = match base.remove(key) {
                    Some(existing) => merge(existing, value),
                    None => value.clone(),
                };
                base.insert(key.clone(), merged);
            }
            Value::Mapping(base)
        }
        // No overrides at all (`Value::Null`) keep the defaults.
        (base, Value::Null) => base,
        (_, over) => over.clone(),
    }
}

/// What `values.schema.json` says is wrong with `values`, one line per problem.
pub fn schema_problems(values: &Value) -> Result<Vec<String>, String> {
    let schema: serde_json::Value =
        serde_json::from_str(&read(&chart_dir().join("values.schema.json"))?)
            .map_err(|error| format!("values.schema.json: {error}"))?;
    let validator = jsonschema::validator_for(&schema)
        .map_err(|error| format!("values.schema.json is not a valid schema: {error}"))?;
    let instance =
        serde_json::to_value(values).map_err(|error| format!("values as JSON: {error}"))?;
    Ok(validator
        .iter_errors(&instance)
        .map(|error| format!("{}: {error}", error.instance_path().as_str()))
        .collect())
}

/// Write `documents` as one multi-document YAML file `<name>.yaml` in a directory under
/// Cargo's target directory, and return its path.
pub fn write_rendered(name: &str, documents: &[Value]) -> PathBuf {
    let directory = Path::new(env!("CARGO_TARGET_TMPDIR")).join("waymark-chart");
    std::fs::create_dir_all(&directory)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", directory.display()));
    let mut text = String::new();
    for document in documents {
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(document).expect("a YAML value serializes"));
    }
    let path = directory.join(format!("{name}.yaml"));
    std::fs::write(&path, text)
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
    path
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Helm splits a rendered file into documents at lines that start with `---`.
fn split_documents(text: &str) -> Vec<String> {
    let mut documents = vec![String::new()];
    for line in text.lines() {
        if line.starts_with("---") {
            documents.push(String::new());
        } else if let Some(current) = documents.last_mut() {
            current.push_str(line);
            current.push('\n');
        }
    }
    documents
}

// ----- parsing -----

enum Node {
    Text(String),
    Output(Pipeline),
    If {
        branches: Vec<(Pipeline, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    With {
        pipeline: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Range {
        pipeline: Pipeline,
        body: Vec<Node>,
    },
}

type Pipeline = Vec<Vec<Operand>>;

#[derive(Clone, Debug)]
enum Operand {
    Text(String),
    Number(i64),
    Bool(bool),
    /// A field path from `.` (`from_root` false) or from `$` (true).
    Field {
        from_root: bool,
        path: Vec<String>,
    },
    Function(String),
    Sub(Pipeline),
}

enum Piece {
    Text(String),
    Action(String),
}

/// Split a template into text and actions, applying `{{-` and `-}}` trimming.
fn lex(template: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = rest[..start].to_string();
        if trim_next {
            text = text.trim_start().to_string();
        }
        let after = &rest[start + 2..];
        let trim_left = after.starts_with("- ") || after.starts_with("-\n");
        if trim_left {
            text = text.trim_end().to_string();
        }
        pieces.push(Piece::Text(text));
        let body_start = if trim_left { 1 } else { 0 };
        let end = action_end(after).ok_or_else(|| {
            format!(
                "unclosed action: {}",
                after.chars().take(40).collect::<String>()
            )
        })?;
        let mut body = &after[body_start..end];
        trim_next = body.ends_with(" -") || body.ends_with("\n-");
        if trim_next {
            body = &body[..body.len() - 1];
        }
        pieces.push(Piece::Action(body.trim().to_string()));
        rest = &after[end + 2..];
    }
    let mut text = rest.to_string();
    if trim_next {
        text = text.trim_start().to_string();
    }
    pieces.push(Piece::Text(text));
    Ok(pieces)
}

/// Where the action's closing `}}` starts, skipping string literals and comments.
fn action_end(action: &str) -> Option<usize> {
    let bytes = action.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'"' => {
                index += 1;
                while index < bytes.len() && bytes[index] != b'"' {
                    if bytes[index] == b'\\' {
                        index += 1;
                    }
                    index += 1;
                }
            }
            b'/' if bytes.get(index + 1) == Some(&b'*') => {
                index += action[index..].find("*/")? + 1;
            }
            b'}' if bytes.get(index + 1) == Some(&b'}') => return Some(index),
            _ => {}
        }
        index += 1;
    }
    None
}

/// Parse a template into nodes, adding its `define`s to `defines`.
fn parse(template: &str, defines: &mut HashMap<String, Vec<Node>>) -> Result<Vec<Node>, String> {
    let pieces = lex(template)?;
    let mut position = 0;
    let (nodes, end) = parse_block(&pieces, &mut position, defines)?;
    match end {
        None => Ok(nodes),
        Some(end) => Err(format!("unexpected {{{{ {end} }}}}")),
    }
}

/// Parse nodes until `end`, `else` or `else if` (returned) or the end of the input (None).
fn parse_block(
    pieces: &[Piece],
    position: &mut usize,
    defines: &mut HashMap<String, Vec<Node>>,
) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while let Some(piece) = pieces.get(*position) {
        *position += 1;
        let action = match piece {
            Piece::Text(text) => {
                if !text.is_empty() {
                    nodes.push(Node::Text(text.clone()));
                }
                continue;
            }
            Piece::Action(action) => action.as_str(),
        };
        if action.starts_with("/*") {
            if !action.ends_with("*/") {
                return Err(format!("a comment must fill its action: {action}"));
            }
            continue;
        }
        let (keyword, argument) = action
            .split_once(char::is_whitespace)
            .map_or((action, ""), |(keyword, argument)| {
                (keyword, argument.trim())
            });
        match keyword {
            "end" | "else" => return Ok((nodes, Some(action.to_string()))),
            "if" => {
                let mut branches = Vec::new();
                let mut condition = parse_pipeline(argument)?;
                let mut otherwise = Vec::new();
                loop {
                    let (body, end) = parse_block(pieces, position, defines)?;
                    let end = end.ok_or("`if` without `end`")?;
                    branches.push((condition, body));
                    if end == "end" {
                        break;
                    }
                    if let Some(next) = end.strip_prefix("else if ") {
                        condition = parse_pipeline(next.trim())?;
                        continue;
                    }
                    if end != "else" {
                        return Err(format!("unsupported {{{{ {end} }}}}"));
                    }
                    let (body, end) = parse_block(pieces, position, defines)?;
                    if end.as_deref() != Some("end") {
                        return Err("`else` without `end`".into());
                    }
                    otherwise = body;
                    break;
                }
                nodes.push(Node::If {
                    branches,
                    otherwise,
                });
            }
            "with" => {
                let pipeline = parse_pipeline(argument)?;
                let (body, end) = parse_block(pieces, position, defines)?;
                let otherwise = match end.as_deref() {
                    Some("end") => Vec::new(),
                    Some("else") => {
                        let (otherwise, end) = parse_block(pieces, position, defines)?;
                        if end.as_deref() != Some("end") {
                            return Err("`with ... else` without `end`".into());
                        }
                        otherwise
                    }
                    _ => return Err("`with` without `end`".into()),
                };
                nodes.push(Node::With {
                    pipeline,
                    body,
                    otherwise,
                });
            }
            "range" => {
                if argument.starts_with('$') && argument.contains(":=") {
                    return Err(format!("range variables are not supported: {action}"));
                }
                let pipeline = parse_pipeline(argument)?;
                let (body, end) = parse_block(pieces, position, defines)?;
                if end.as_deref() != Some("end") {
                    return Err("`range` without `end` (or with `else`, unsupported)".into());
                }
                nodes.push(Node::Range { pipeline, body });
            }
            "define" => {
                let name = string_literal(argument)?;
                let (body, end) = parse_block(pieces, position, defines)?;
                if end.as_deref() != Some("end") {
                    return Err(format!("define {name} without `end`"));
                }
                defines.insert(name, body);
            }
            "template" | "block" | "break" | "continue" => {
                return Err(format!("unsupported action: {action}"));
            }
            _ => nodes.push(Node::Output(parse_pipeline(action)?)),
        }
    }
    Ok((nodes, None))
}

fn string_literal(text: &str) -> Result<String, String> {
    let inner = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .ok_or_else(|| format!("expected a string literal, found {text}"))?;
    Ok(inner.replace("\\\"", "\"").replace("\\\\", "\\"))
}

fn parse_pipeline(text: &str) -> Result<Pipeline, String> {
    if text.contains(":=") || text.contains(" = ") {
        return Err(format!("variables are not supported: {text}"));
    }
    let tokens = tokenize(text)?;
    let mut position = 0;
    let pipeline = pipeline_from(&tokens, &mut position)?;
    if position != tokens.len() {
        return Err(format!("unbalanced parentheses in {text}"));
    }
    Ok(pipeline)
}

#[derive(Clone, Debug)]
enum Token {
    Operand(Operand),
    Open,
    Close,
    Pipe,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut index = 0;
    let word_end = |start: usize| {
        let mut end = start;
        while end < chars.len() && !chars[end].is_whitespace() && !"()|".contains(chars[end]) {
            end += 1;
        }
        end
    };
    while index < chars.len() {
        let c = chars[index];
        if c.is_whitespace() {
            index += 1;
        } else if c == '(' {
            tokens.push(Token::Open);
            index += 1;
        } else if c == ')' {
            tokens.push(Token::Close);
            index += 1;
        } else if c == '|' {
            tokens.push(Token::Pipe);
            index += 1;
        } else if c == '"' {
            let mut value = String::new();
            index += 1;
            while index < chars.len() && chars[index] != '"' {
                if chars[index] == '\\' && index + 1 < chars.len() {
                    index += 1;
                    value.push(match chars[index] {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                } else {
                    value.push(chars[index]);
                }
                index += 1;
            }
            if index == chars.len() {
                return Err(format!("unterminated string in {text}"));
            }
            index += 1;
            tokens.push(Token::Operand(Operand::Text(value)));
        } else {
            let end = word_end(index);
            let word: String = chars[index..end].iter().collect();
            index = end;
            tokens.push(Token::Operand(word_operand(&word)?));
        }
    }
    Ok(tokens)
}

fn word_operand(word: &str) -> Result<Operand, String> {
    let path = |rest: &str| -> Vec<String> {
        rest.split('.')
            .filter(|part| !part.is_empty())
            .map(String::from)
            .collect()
    };
    if word == "." || word.starts_with('.') {
        Ok(Operand::Field {
            from_root: false,
            path: path(word),
        })
    } else if word == "$" || word.starts_with("$.") {
        Ok(Operand::Field {
            from_root: true,
            path: path(&word[1..]),
        })
    } else if word.starts_with('$') {
        Err(format!("variables are not supported: {word}"))
    } else if word == "true" || word == "false" {
        Ok(Operand::Bool(word == "true"))
    } else if let Ok(number) = word.parse::<i64>() {
        Ok(Operand::Number(number))
    } else if word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(Operand::Function(word.to_string()))
    } else {
        Err(format!("unsupported operand: {word}"))
    }
}

fn pipeline_from(tokens: &[Token], position: &mut usize) -> Result<Pipeline, String> {
    let mut pipeline = vec![Vec::new()];
    while let Some(token) = tokens.get(*position) {
        match token {
            Token::Close => break,
            Token::Pipe => {
                *position += 1;
                pipeline.push(Vec::new());
            }
            Token::Open => {
                *position += 1;
                let sub = pipeline_from(tokens, position)?;
                if !matches!(tokens.get(*position), Some(Token::Close)) {
                    return Err("unclosed parenthesis".into());
                }
                *position += 1;
                pipeline
                    .last_mut()
                    .expect("never empty")
                    .push(Operand::Sub(sub));
            }
            Token::Operand(operand) => {
                *position += 1;
                pipeline
                    .last_mut()
                    .expect("never empty")
                    .push(operand.clone());
            }
        }
    }
    if pipeline.iter().any(Vec::is_empty) {
        return Err("empty command in a pipeline".into());
    }
    Ok(pipeline)
}

// ----- rendering -----

struct Engine {
    defines: HashMap<String, Vec<Node>>,
}

impl Engine {
    fn render(&self, nodes: &[Node], dot: &Value, root: &Value) -> Result<String, String> {
        let mut out = String::new();
        for node in nodes {
            match node {
                Node::Text(text) => out.push_str(text),
                Node::Output(pipeline) => {
                    out.push_str(&printed(&self.pipeline(pipeline, dot, root)?)?);
                }
                Node::If {
                    branches,
                    otherwise,
                } => {
                    let mut chosen = otherwise;
                    for (condition, body) in branches {
                        if truthy(&self.pipeline(condition, dot, root)?) {
                            chosen = body;
                            break;
                        }
                    }
                    out.push_str(&self.render(chosen, dot, root)?);
                }
                Node::With {
                    pipeline,
                    body,
                    otherwise,
                } => {
                    let value = self.pipeline(pipeline, dot, root)?;
                    if truthy(&value) {
                        out.push_str(&self.render(body, &value, root)?);
                    } else {
                        out.push_str(&self.render(otherwise, dot, root)?);
                    }
                }
                Node::Range { pipeline, body } => match self.pipeline(pipeline, dot, root)? {
                    Value::Null => {}
                    Value::Sequence(items) => {
                        for item in &items {
                            out.push_str(&self.render(body, item, root)?);
                        }
                    }
                    Value::Mapping(map) => {
                        let mut entries: Vec<(String, &Value)> = map
                            .iter()
                            .map(|(k, v)| (printed(k).unwrap_or_default(), v))
                            .collect();
                        entries.sort_by(|a, b| a.0.cmp(&b.0));
                        for (_, item) in entries {
                            out.push_str(&self.render(body, item, root)?);
                        }
                    }
                    other => return Err(format!("cannot range over {other:?}")),
                },
            }
        }
        Ok(out)
    }

    fn pipeline(&self, pipeline: &Pipeline, dot: &Value, root: &Value) -> Result<Value, String> {
        let mut piped: Option<Value> = None;
        for command in pipeline {
            piped = Some(self.command(command, piped, dot, root)?);
        }
        piped.ok_or_else(|| "empty pipeline".to_string())
    }

    fn command(
        &self,
        command: &[Operand],
        piped: Option<Value>,
        dot: &Value,
        root: &Value,
    ) -> Result<Value, String> {
        let (head, rest) = command.split_first().ok_or("empty command")?;
        let files_get =
            matches!(head, Operand::Field { from_root: false, path } if path == &["Files", "Get"]);
        let function = match head {
            Operand::Function(name) => Some(name.as_str()),
            _ if files_get => Some("Files.Get"),
            _ => None,
        };
        let Some(function) = function else {
            if !rest.is_empty() || piped.is_some() {
                return Err(format!("{head:?} is not a function"));
            }
            return self.operand(head, dot, root);
        };
        let mut args = rest
            .iter()
            .map(|operand| self.operand(operand, dot, root))
            .collect::<Result<Vec<_>, _>>()?;
        args.extend(piped);
        self.call(function, &args, root)
    }

    fn operand(&self, operand: &Operand, dot: &Value, root: &Value) -> Result<Value, String> {
        match operand {
            Operand::Text(text) => Ok(Value::String(text.clone())),
            Operand::Number(number) => Ok(Value::Number((*number).into())),
            Operand::Bool(value) => Ok(Value::Bool(*value)),
            Operand::Field { from_root, path } => {
                let mut value = if *from_root { root } else { dot };
                for (depth, key) in path.iter().enumerate() {
                    match value {
                        Value::Mapping(map) => match map.get(key.as_str()) {
                            Some(next) => value = next,
                            // Go templates give nil for a missing map key (Helm prints "").
                            None if depth + 1 == path.len() => return Ok(Value::Null),
                            None => {
                                return Err(format!("nil pointer evaluating .{}", path.join(".")));
                            }
                        },
                        _ => return Err(format!("cannot evaluate .{} here", path.join("."))),
                    }
                }
                Ok(value.clone())
            }
            Operand::Function(name) => self.call(name, &[], root),
            Operand::Sub(pipeline) => self.pipeline(pipeline, dot, root),
        }
    }

    fn call(&self, function: &str, args: &[Value], root: &Value) -> Result<Value, String> {
        let arity = |wanted: usize| {
            if args.len() == wanted {
                Ok(())
            } else {
                Err(format!(
                    "{function} takes {wanted} arguments, got {}",
                    args.len()
                ))
            }
        };
        let text = |value: &Value| printed(value);
        let number = |value: &Value| -> Result<i64, String> {
            match value {
                Value::Number(number) => number
                    .as_i64()
                    .or_else(|| number.as_f64().map(|float| float as i64))
                    .ok_or_else(|| format!("{function}: not a number: {number}")),
                Value::String(text) => text
                    .parse()
                    .map_err(|_| format!("{function}: not a number: {text}")),
                Value::Null => Ok(0),
                other => Err(format!("{function}: not a number: {other:?}")),
            }
        };
        let compare = |ordering: fn(std::cmp::Ordering) -> bool| -> Result<Value, String> {
            arity(2)?;
            Ok(Value::Bool(ordering(
                number(&args[0])?.cmp(&number(&args[1])?),
            )))
        };
        match function {
            "include" => {
                arity(2)?;
                let name = text(&args[0])?;
                let body = self
                    .defines
                    .get(&name)
                    .ok_or_else(|| format!("no template named {name}"))?;
                Ok(Value::String(self.render(body, &args[1], root)?))
            }
            "Files.Get" => {
                arity(1)?;
                let path = chart_dir().join(text(&args[0])?);
                // Helm returns "" for a missing file; here a typo must fail the test.
                Ok(Value::String(read(&path)?))
            }
            "toYaml" => {
                arity(1)?;
                let yaml = serde_yaml::to_string(&args[0]).map_err(|error| error.to_string())?;
                Ok(Value::String(yaml.trim_end_matches('\n').to_string()))
            }
            "indent" | "nindent" => {
                arity(2)?;
                let pad = " ".repeat(usize::try_from(number(&args[0])?).unwrap_or(0));
                let indented = format!(
                    "{pad}{}",
                    text(&args[1])?.replace('\n', &format!("\n{pad}"))
                );
                Ok(Value::String(if function == "nindent" {
                    format!("\n{indented}")
                } else {
                    indented
                }))
            }
            "default" => {
                arity(2)?;
                Ok(if truthy(&args[1]) {
                    args[1].clone()
                } else {
                    args[0].clone()
                })
            }
            "quote" => {
                arity(1)?;
                let value = text(&args[0])?;
                Ok(Value::String(format!(
                    "\"{}\"",
                    value.replace('\\', "\\\\").replace('"', "\\\"")
                )))
            }
            "printf" => {
                let (format, rest) = args.split_first().ok_or("printf needs a format")?;
                let format = text(format)?;
                let mut out = String::new();
                let mut rest = rest.iter();
                let mut chars = format.chars();
                while let Some(c) = chars.next() {
                    if c != '%' {
                        out.push(c);
                        continue;
                    }
                    match chars.next() {
                        Some('s' | 'd' | 'v') => {
                            out.push_str(&text(rest.next().ok_or("printf: too few arguments")?)?)
                        }
                        Some('%') => out.push('%'),
                        other => return Err(format!("printf: unsupported verb %{other:?}")),
                    }
                }
                if rest.next().is_some() {
                    return Err("printf: too many arguments".into());
                }
                Ok(Value::String(out))
            }
            "int" => {
                arity(1)?;
                Ok(Value::Number(number(&args[0])?.into()))
            }
            "contains" => {
                arity(2)?;
                Ok(Value::Bool(text(&args[1])?.contains(&text(&args[0])?)))
            }
            "not" => {
                arity(1)?;
                Ok(Value::Bool(!truthy(&args[0])))
            }
            "and" => Ok(args
                .iter()
                .find(|value| !truthy(value))
                .or(args.last())
                .cloned()
                .unwrap_or(Value::Null)),
            "or" => Ok(args
                .iter()
                .find(|value| truthy(value))
                .or(args.last())
                .cloned()
                .unwrap_or(Value::Null)),
            "eq" | "ne" => {
                arity(2)?;
                let equal = text(&args[0])? == text(&args[1])?;
                Ok(Value::Bool(equal == (function == "eq")))
            }
            "gt" => compare(std::cmp::Ordering::is_gt),
            "ge" => compare(std::cmp::Ordering::is_ge),
            "lt" => compare(std::cmp::Ordering::is_lt),
            "le" => compare(std::cmp::Ordering::is_le),
            other => Err(format!("unsupported function {other}")),
        }
    }
}

/// Go template truth: false, 0, nil, and empty strings, lists and maps are false.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(value) => *value,
        Value::Number(number) => number.as_f64() != Some(0.0),
        Value::String(text) => !text.is_empty(),
        Value::Sequence(items) => !items.is_empty(),
        Value::Mapping(map) => !map.is_empty(),
        Value::Tagged(tagged) => truthy(&tagged.value),
    }
}

/// A value as `{{ }}` prints it; maps and lists need `toYaml`.
fn printed(value: &Value) -> Result<String, String> {
    match value {
        Value::Null => Ok(String::new()),
        Value::Bool(value) => Ok(value.to_string()),
        Value::Number(number) => Ok(number.to_string()),
        Value::String(text) => Ok(text.clone()),
        other => Err(format!("cannot print {other:?} (use toYaml)")),
    }
}

/// Render one template with `values` as `.Values` (and nothing else in the root), for testing
/// the renderer itself.
pub fn render_template(template: &str, values: &Value) -> Result<String, String> {
    let mut defines = HashMap::new();
    let nodes = parse(template, &mut defines)?;
    let mut root = Mapping::new();
    root.insert("Values".into(), values.clone());
    let root = Value::Mapping(root);
    Engine { defines }.render(&nodes, &root, &root)
}
