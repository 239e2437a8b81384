//! Fixture loading and builders for binary formats (PDF, DOCX) made in the test itself.

use std::io::{Cursor, Write};

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn fixture_str(name: &str) -> String {
    String::from_utf8(fixture(name)).unwrap()
}

/// A minimal valid PDF: one page per entry, each line of the entry drawn with Helvetica.
pub fn make_pdf(pages: &[&[&str]]) -> Vec<u8> {
    let page_count = pages.len();
    // Objects: 1 catalog, 2 pages, 3 font, then (page, content) pairs.
    let mut objects: Vec<String> = Vec::new();
    objects.push("<< /Type /Catalog /Pages 2 0 R >>".to_owned());
    let kids: Vec<String> = (0..page_count)
        .map(|i| format!("{} 0 R", 4 + 2 * i))
        .collect();
    objects.push(format!(
        "<< /Type /Pages /Kids [{}] /Count {page_count} >>",
        kids.join(" ")
    ));
    objects.push(
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_owned(),
    );
    for (i, lines) in pages.iter().enumerate() {
        let content_id = 5 + 2 * i;
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] \
             /Resources << /Font << /F1 3 0 R >> >> /Contents {content_id} 0 R >>"
        ));
        let mut stream = String::from("BT /F1 12 Tf 72 720 Td 14 TL\n");
        for line in lines.iter() {
            let escaped = line
                .replace('\\', "\\\\")
                .replace('(', "\\(")
                .replace(')', "\\)");
            stream.push_str(&format!("({escaped}) Tj T*\n"));
        }
        stream.push_str("ET");
        objects.push(format!(
            "<< /Length {} >>\nstream\n{stream}\nendstream",
            stream.len()
        ));
    }
    let mut out = Vec::new();
    out.extend_from_slice(b"%PDF-1.4\n");
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref_at = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n", objects.len() + 1).as_bytes());
    out.extend_from_slice(b"0000000000 65535 f \n");
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref_at}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// A zip with the given `(name, contents)` entries, deflated.
pub fn make_zip(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, body) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(body.as_bytes()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

pub const DOCX_CONTENT_TYPES: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>
</Types>"#;

/// A DOCX with a title, a heading, paragraphs (tab, line break, entity, deleted text, an
/// AlternateContent fallback) and a 2×3 table with a two-paragraph cell.
pub fn make_docx() -> Vec<u8> {
    let body = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"
            xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006">
<w:body>
  <w:p><w:pPr><w:pStyle w:val="Title"/></w:pPr><w:r><w:t>Billing Guide</w:t></w:r></w:p>
  <w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Invoices</w:t></w:r></w:p>
  <w:p><w:r><w:t xml:space="preserve">Invoices are sent </w:t></w:r><w:r><w:rPr><w:b/></w:rPr><w:t>monthly</w:t></w:r><w:r><w:t>.</w:t></w:r></w:p>
  <w:p><w:r><w:t>Col A</w:t><w:tab/><w:t>Col B</w:t></w:r></w:p>
  <w:p><w:r><w:t>First line</w:t><w:br/><w:t>Second line</w:t></w:r></w:p>
  <w:p><w:r><w:t>Terms &amp; conditions</w:t></w:r><w:del><w:r><w:delText>DELETED-TEXT</w:delText></w:r></w:del></w:p>
  <w:p><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:t>Shape text</w:t></mc:Choice><mc:Fallback><w:t>FALLBACK-TEXT</w:t></mc:Fallback></mc:AlternateContent></w:r></w:p>
  <w:p/>
  <w:tbl>
    <w:tr>
      <w:tc><w:p><w:r><w:t>Plan</w:t></w:r></w:p></w:tc>
      <w:tc><w:p><w:r><w:t>Price</w:t></w:r></w:p></w:tc>
      <w:tc><w:p><w:r><w:t>Notes</w:t></w:r></w:p></w:tc>
    </w:tr>
    <w:tr>
      <w:tc><w:p><w:r><w:t>Pro</w:t></w:r></w:p></w:tc>
      <w:tc><w:p><w:r><w:t>$10</w:t></w:r></w:p></w:tc>
      <w:tc><w:p><w:r><w:t>Billed</w:t></w:r></w:p><w:p><w:r><w:t>yearly</w:t></w:r></w:p></w:tc>
    </w:tr>
  </w:tbl>
  <w:p><w:pPr><w:pStyle w:val="Heading2"/></w:pPr><w:r><w:t>Refunds</w:t></w:r></w:p>
  <w:p><w:r><w:t>GET /refunds/{id} returns a refund.</w:t></w:r></w:p>
  <w:sectPr/>
</w:body>
</w:document>"#;
    make_zip(&[
        ("[Content_Types].xml", DOCX_CONTENT_TYPES),
        ("word/document.xml", body),
    ])
}

/// Prose with a line break every sentence and a heading every ten lines.
pub fn long_prose(lines: usize) -> String {
    let words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    ];
    let mut s = String::new();
    for i in 0..lines {
        if i % 10 == 0 {
            s.push_str(&format!("## Section {}\n", i / 10 + 1));
        }
        for j in 0..(8 + i % 7) {
            if j > 0 {
                s.push(' ');
            }
            s.push_str(words[(i * 7 + j * 3) % words.len()]);
        }
        s.push_str(&format!(" {i}.\n"));
    }
    s
}
