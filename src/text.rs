//! Plain-text helpers shared by the front doors (the CLI, the demo): aligned tables, plurals,
//! shell quoting, cutting long lines. A leaf module: it imports nothing of Ferry's.

/// Render rows as an aligned text table.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c}{}", " ".repeat(widths[i] - c.chars().count())))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r));
    }
    out
}

/// `n` and the noun in the right number: `1 dead row`, `2 dead rows`.
pub fn plural<N>(n: N, one: &str, many: &str) -> String
where
    N: std::fmt::Display + PartialEq + From<u8>,
{
    format!("{n} {}", if n == N::from(1) { one } else { many })
}

/// `text` as one shell word: unchanged when it holds only characters no shell treats specially,
/// otherwise in single quotes (a `'` inside becomes `'\''`).
pub fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// A SQL statement as one shell word that reads well: in single quotes when it has none, in
/// double quotes when it has single quotes but nothing a shell expands inside double quotes
/// (`$`, `` ` ``, `\`, `"`, and `!` for interactive history), otherwise [`shell_quote`].
pub fn shell_quote_sql(sql: &str) -> String {
    if !sql.contains('\'') {
        format!("'{sql}'")
    } else if !sql.chars().any(|c| "$`\\\"!".contains(c)) {
        format!("\"{sql}\"")
    } else {
        shell_quote(sql)
    }
}

/// How to type this program in a shell, from the current directory: `ferry` when that is what
/// `PATH` finds, otherwise the path of the running executable (relative when it is under the
/// current directory, e.g. `target/release/ferry` after `cargo run --release`), shell-quoted.
pub fn program() -> String {
    let Some(exe) = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
    else {
        return "ferry".into();
    };
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("ferry"))
            .find(|candidate| candidate.is_file())
    });
    if on_path.and_then(|p| p.canonicalize().ok()).as_ref() == Some(&exe) {
        return "ferry".into();
    }
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.canonicalize().ok())
        .and_then(|cwd| exe.strip_prefix(cwd).ok().map(|p| p.to_path_buf()));
    let shown = match relative {
        // A bare name would be looked up in PATH, not here.
        Some(rel) if rel.components().count() == 1 => format!("./{}", rel.display()),
        Some(rel) => rel.display().to_string(),
        None => exe.display().to_string(),
    };
    shell_quote(&shown)
}

/// At most `max` characters of `text` on one line: whole when short, otherwise its start and
/// its end around `…` (the end of an error often names what failed: `no such table: orders`).
pub fn middle_cut(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let count = flat.chars().count();
    if count <= max {
        return flat;
    }
    let keep = max.saturating_sub(1);
    let head = keep / 2;
    let tail = keep - head;
    let start: String = flat.chars().take(head).collect();
    let end: String = flat.chars().skip(count - tail).collect();
    format!("{start}…{end}")
}
