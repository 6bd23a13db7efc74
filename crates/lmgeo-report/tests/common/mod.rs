//! Helpers shared by the integration tests: a small SVG well-formedness
//! check, text and element extraction, and PNG decoding.

#![allow(dead_code)]

/// Checks that `svg` is one `<svg>` element whose tags nest properly, and
/// returns the names of all elements in document order.
pub fn check_svg(svg: &str) -> Vec<String> {
    let trimmed = svg.trim();
    assert!(trimmed.starts_with("<svg"), "does not start with <svg");
    assert!(trimmed.ends_with("</svg>"), "does not end with </svg>");
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut rest = trimmed;
    while let Some(start) = rest.find('<') {
        let text = &rest[..start];
        assert!(!text.contains('>'), "stray '>' in text: {text:?}");
        check_entities(text);
        let end = rest[start..].find('>').expect("unclosed tag") + start;
        let tag = &rest[start + 1..end];
        assert!(!tag.contains('<'), "'<' inside a tag: {tag:?}");
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "unbalanced quotes in {tag:?}"
        );
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack
                .pop()
                .unwrap_or_else(|| panic!("</{name}> without opening tag"));
            assert_eq!(open, name.trim(), "</{name}> closes <{open}>");
        } else {
            let name: String = tag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            assert!(!name.is_empty(), "tag without a name: {tag:?}");
            names.push(name.clone());
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        rest = &rest[end + 1..];
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    names
}

fn check_entities(text: &str) {
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        let after = &rest[i + 1..];
        let ok = ["amp;", "lt;", "gt;", "quot;", "apos;", "#"]
            .iter()
            .any(|e| after.starts_with(e));
        assert!(ok, "bare '&' in SVG text: {text:?}");
        rest = after;
    }
}

/// The text content of every `<text>` element, unescaped and trimmed.
pub fn svg_texts(svg: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find("<text") {
        let open_end = rest[i..].find('>').unwrap() + i;
        let close = rest[open_end..].find("</text>").unwrap() + open_end;
        let raw = rest[open_end + 1..close].trim();
        out.push(
            raw.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&amp;", "&"),
        );
        rest = &rest[close..];
    }
    out
}

/// The opening tags of all `<name` elements whose attributes contain every
/// one of `attrs` (e.g. `stroke="#0072B2"`).
pub fn elements<'a>(svg: &'a str, name: &str, attrs: &[&str]) -> Vec<&'a str> {
    let needle = format!("<{name} ");
    let mut out = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find(&needle) {
        let end = rest[i..].find('>').unwrap() + i;
        let tag = &rest[i..=end];
        if attrs.iter().all(|a| tag.contains(a)) {
            out.push(tag);
        }
        rest = &rest[end..];
    }
    out
}

/// The value of attribute `name` in an opening tag.
pub fn attr<'a>(tag: &'a str, name: &str) -> &'a str {
    let key = format!(" {name}=\"");
    let i = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    let j = tag[i..].find('"').unwrap() + i;
    &tag[i..j]
}

pub struct Image {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Image {
    pub fn count(&self, c: (u8, u8, u8)) -> usize {
        self.rgb
            .chunks_exact(3)
            .filter(|p| (p[0], p[1], p[2]) == c)
            .count()
    }

    pub fn distinct_colours(&self) -> usize {
        let mut set = std::collections::HashSet::new();
        for p in self.rgb.chunks_exact(3) {
            set.insert((p[0], p[1], p[2]));
        }
        set.len()
    }
}

/// Decodes PNG bytes, checking the signature, into 8-bit RGB.
pub fn decode_png(bytes: &[u8]) -> Image {
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "missing PNG signature"
    );
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("buffer size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    Image {
        width: info.width,
        height: info.height,
        rgb: buf,
    }
}

/// Hex colour as written by plotters' SVG backend.
pub fn hex((r, g, b): (u8, u8, u8)) -> String {
    format!("#{r:02X}{g:02X}{b:02X}")
}
