//! TOML errors turned into [`ConfigError::Parse`]: the file, line, column
//! and key, and the parser's message without any value of the file. The
//! parser's own `Display` quotes the offending line, and serde's messages
//! quote the value of a wrong type (`invalid type: string "..."`), so a
//! password in a broken file would reach the terminal.

use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, Value};

use super::ConfigError;

/// `error`, from parsing `text` read from `path`, as a value-free error.
pub(super) fn parse_error(path: &str, text: &str, error: &toml::de::Error) -> ConfigError {
    let offset = error.span().map_or(0, |span| span.start).min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    ConfigError::Parse {
        path: path.to_owned(),
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
        key: key_at(text, offset),
        message: without_values(error.message()),
    }
}

/// The dotted key at byte `offset`: from the document's spans when it
/// parses (the error is the schema's), else from the table header above
/// and the key on the broken line.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let mut path = Vec::new();
    match ImDocument::parse(text) {
        Ok(doc) => {
            find_in_table(doc.as_table(), offset, &mut path);
        }
        Err(_) => {
            let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
            if let Some(table) = text[..line_start].lines().rev().find_map(table_header) {
                path.push(table.to_owned());
            }
            let line = text[line_start..].lines().next().unwrap_or("");
            path.extend(key_of_line(line).map(str::to_owned));
        }
    }
    (!path.is_empty()).then(|| path.join("."))
}

fn contains(span: Option<Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.contains(&offset) || s.start == offset)
}

/// Pushes the keys down to the innermost one whose key or value holds
/// `offset`; false (and `path` unchanged) when none does.
fn find_in_table(table: &Table, offset: usize, path: &mut Vec<String>) -> bool {
    for (name, item) in table.iter() {
        path.push(name.to_owned());
        let here = contains(table.key(name).and_then(|k| k.span()), offset)
            || contains(item.span(), offset);
        if find_in_item(item, offset, path) || here {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_item(item: &Item, offset: usize, path: &mut Vec<String>) -> bool {
    match item {
        Item::Table(table) => find_in_table(table, offset, path),
        Item::ArrayOfTables(tables) => tables.iter().enumerate().any(|(i, table)| {
            let found = find_in_table(table, offset, path) || contains(table.span(), offset);
            if found {
                indexed(path, i);
            }
            found
        }),
        Item::Value(value) => find_in_value(value, offset, path),
        Item::None => false,
    }
}

fn find_in_value(value: &Value, offset: usize, path: &mut Vec<String>) -> bool {
    match value {
        Value::InlineTable(table) => table.iter().any(|(name, value)| {
            path.push(name.to_owned());
            let here = contains(table.key(name).and_then(|k| k.span()), offset)
                || contains(value.span(), offset);
            let found = find_in_value(value, offset, path) || here;
            if !found {
                path.pop();
            }
            found
        }),
        Value::Array(array) => array.iter().enumerate().any(|(i, value)| {
            let found = find_in_value(value, offset, path) || contains(value.span(), offset);
            if found {
                indexed(path, i);
            }
            found
        }),
        _ => false,
    }
}

/// `flows` becomes `flows[2]`: the element of an array the error is in.
fn indexed(path: &mut [String], index: usize) {
    if let Some(last) = path.last_mut() {
        last.push_str(&format!("[{index}]"));
    }
}

/// The table a `[table]` or `[[table]]` header line opens.
fn table_header(line: &str) -> Option<&str> {
    let inner = line.trim().strip_prefix('[')?;
    let inner = inner.strip_prefix('[').unwrap_or(inner);
    let name = inner.split(']').next()?.trim();
    is_key(name).then_some(name)
}

/// The key of a broken `key = value` line. Only a plain lower-case key,
/// as the schema's are, followed by `=` and something other than `=`: a
/// secret pasted on a line of its own (`c2VjcmV0==`) is not taken for one.
fn key_of_line(line: &str) -> Option<&str> {
    let (key, value) = line.split_once('=')?;
    let key = key.trim();
    (is_key(key) && !value.trim_start().starts_with('=')).then_some(key)
}

fn is_key(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
}

/// The parser's message with the values serde quotes removed: the wrong
/// value's kind is kept (`invalid type: string, expected usize`), never its
/// text. Names of keys and of the expected values stay.
fn without_values(message: &str) -> String {
    let message = message.trim().replace('\n', "; ");
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // The expected part comes last; the value may hold anything.
            let (found, expected) = rest
                .rfind(", expected ")
                .map_or((rest, ""), |i| rest.split_at(i));
            let kind = found.split(['`', '"']).next().unwrap_or("").trim();
            return format!("{prefix}{kind}{expected}");
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let expected = rest.rfind("`, expected ").map_or("", |i| &rest[i + 1..]);
        return format!("unknown variant{expected}");
    }
    message
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::super::MirrorConfig;

    /// Recognisable secrets: a string, and the digits of a number-only one.
    const SECRET: &str = "Zq7-s3cr3t-Xv";
    const DIGITS: &str = "73219908417";

    /// Lines 1 to 7; the broken line is line 8.
    const HEAD: &str = "[target]\nbootstrap_servers = \"t:1\"\n[source]\n\
                        bootstrap_servers = \"s:1\"\n[source.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\n";

    /// Broken `[source.sasl]` bodies holding a secret under every key that
    /// takes one, each with the key and the line its error must name.
    fn cases() -> Vec<(String, String, usize)> {
        let mut cases = Vec::new();
        for key in ["password", "token", "token_command"] {
            let sasl = format!("source.sasl.{key}");
            for (body, named, line) in [
                // A syntax error on the secret's line.
                (format!("{key} = \"{SECRET}"), sasl.clone(), 8),
                (format!("{key} = {SECRET}"), sasl.clone(), 8),
                (format!("{key} = \"{SECRET}\" trailing"), sasl.clone(), 8),
                (format!("{key} \"{SECRET}\""), "source.sasl".to_owned(), 8),
                (format!("{key} = \"{SECRET}\\q\""), sasl.clone(), 8),
                // Unterminated to the end of the file, where the parser stops.
                (format!("{key} = '''{SECRET}"), "source.sasl".to_owned(), 9),
                // A duplicate.
                (
                    format!("{key} = \"a\"\n{key} = \"{SECRET}\""),
                    sasl.clone(),
                    9,
                ),
                // The secret under a misspelled or an unknown key.
                (format!("{key}s = \"{SECRET}\""), format!("{sasl}s"), 8),
                (
                    format!("secret = \"{SECRET}\""),
                    "source.sasl.secret".to_owned(),
                    8,
                ),
                // The wrong type.
                (format!("{key} = {DIGITS}"), sasl.clone(), 8),
                (format!("{key} = {DIGITS}.5"), sasl.clone(), 8),
                (format!("{key} = [\"{SECRET}\"]"), sasl.clone(), 8),
                (
                    format!("{key} = {{ value = \"{SECRET}\" }}"),
                    sasl.clone(),
                    8,
                ),
                // A misspelled key next to the secret.
                (
                    format!("{key} = \"{SECRET}\"\nmechansm = \"PLAIN\""),
                    "source.sasl.mechansm".to_owned(),
                    9,
                ),
            ] {
                cases.push((format!("{HEAD}{body}\n"), named, line));
            }
        }
        // A secret pasted on a line of its own is not taken for a key.
        cases.push((format!("{HEAD}{SECRET}==\n"), "source.sasl".to_owned(), 8));
        // Inline tables and named clusters.
        cases.push((
            format!(
                "[clusters.east]\nbootstrap_servers = \"e:1\"\n\
                 sasl = {{ mechanism = \"PLAIN\", username = \"u\", pasword = \"{SECRET}\" }}\n"
            ),
            "clusters.east.sasl.pasword".to_owned(),
            3,
        ));
        cases.push((
            format!("[clusters.east]\nsasl.password = {DIGITS}\n"),
            "clusters.east.sasl.password".to_owned(),
            2,
        ));
        cases
    }

    #[test]
    fn config_errors_name_file_line_and_key_never_the_secret() {
        for (text, key, line) in cases() {
            let mut file = tempfile::NamedTempFile::new().expect("temp file");
            file.write_all(text.as_bytes()).expect("write");
            let path = file.path().display().to_string();
            let err = MirrorConfig::from_file(file.path()).expect_err(&text);
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(
                    !shown.contains(SECRET) && !shown.contains(DIGITS),
                    "the secret is shown:\n{text}\n{shown}"
                );
            }
            let shown = err.to_string();
            assert!(shown.contains(&path), "no file:\n{text}\n{shown}");
            assert!(
                shown.contains(&format!("line {line}, column ")),
                "no line {line}:\n{text}\n{shown}"
            );
            assert!(
                shown.contains(&format!("key `{key}`")),
                "no key {key}:\n{text}\n{shown}"
            );
        }
    }
}
