//! Escaping of user text (titles, claims, labels, table cells) for HTML and
//! Markdown. Everything a caller passes in is text, never markup.

/// Text for HTML element content and attribute values (quoted with `"`).
pub(crate) fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in HTML text.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Inline Markdown text on one line: every character that could start
/// emphasis, code, a link, raw HTML, an entity or a table cell boundary is
/// backslash-escaped, and line breaks become spaces.
pub(crate) fn md_text(s: &str) -> String {
    let line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '&' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    escape_line_start(out)
}

/// Markdown that would turn a line of plain text into a heading, list item,
/// thematic break or setext underline: `# x`, `- x`, `+ x`, `1. x`,
/// `2) x`, `---`, `===`. Only the block marker is escaped, so "-0.12" and
/// "0.97" stay as they are.
fn escape_line_start(line: String) -> String {
    let marker_then_gap = |rest: &str| rest.is_empty() || rest.starts_with(' ');
    let hashes = line.chars().take_while(|&c| c == '#').count();
    if (1..=6).contains(&hashes) && marker_then_gap(&line[hashes..]) {
        return format!("\\{line}");
    }
    if (line.starts_with('-') || line.starts_with('+')) && marker_then_gap(&line[1..]) {
        return format!("\\{line}");
    }
    let rule = |c: char| !line.is_empty() && line.chars().all(|x| x == c || x == ' ');
    if rule('-') || rule('=') {
        return format!("\\{line}");
    }
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    if (1..=9).contains(&digits) {
        let rest = &line[digits..];
        if (rest.starts_with('.') || rest.starts_with(')')) && marker_then_gap(&rest[1..]) {
            return format!("{}\\{}", &line[..digits], rest);
        }
    }
    line
}

/// A Markdown table cell: as [`md_text`] (which escapes `|`).
pub(crate) fn md_cell(s: &str) -> String {
    md_text(s)
}

/// Paragraphs separated by blank lines, each escaped as [`md_text`].
pub(crate) fn md_paragraphs(s: &str) -> String {
    s.replace("\r\n", "\n")
        .split("\n\n")
        .map(md_text)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_markup_and_quotes() {
        assert_eq!(
            html("<script>alert(\"x\" & 'y')</script>"),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(html("a\u{0}b"), "a\u{FFFD}b");
    }

    #[test]
    fn markdown_text_cannot_become_markup() {
        assert_eq!(md_text("a*b*_c_ [l](u) <b>"), r"a\*b\*\_c\_ \[l\](u) \<b\>");
        assert_eq!(md_text("x | y"), r"x \| y");
        assert_eq!(md_text("line\nbreak"), "line break");
        assert_eq!(md_text("# not a heading"), r"\# not a heading");
        assert_eq!(md_text("- not a list"), r"\- not a list");
        assert_eq!(md_text("12. not a list"), r"12\. not a list");
        assert_eq!(md_text("3) not a list"), r"3\) not a list");
        assert_eq!(md_text("---"), r"\---");
        assert_eq!(md_text("== ="), r"\== =");
        assert_eq!(md_text("## x"), r"\## x");
        // Numbers are not block markers.
        assert_eq!(md_text("0.97"), "0.97");
        assert_eq!(md_text("-0.12"), "-0.12");
        assert_eq!(md_text("#5 best"), "#5 best");
        assert_eq!(md_text("&amp;"), r"\&amp;");
        // Ordinary scientific text stays readable.
        assert_eq!(
            md_text("R^2 = 0.97, b = -0.12 [-0.15, -0.09]"),
            r"R^2 = 0.97, b = -0.12 \[-0.15, -0.09\]"
        );
    }

    #[test]
    fn paragraphs_are_kept_apart() {
        assert_eq!(md_paragraphs("a\nb\n\n*c*"), "a b\n\n\\*c\\*");
    }
}
