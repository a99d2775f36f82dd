"""`multitask.Document`'s readers: a web page's visible text with its map back into the HTML,
and a PDF's text layer with its pages (PDFs written by pypdf in the tests)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pypdf import PdfReader, PdfWriter

import multitask
from _text_pdf import text_pdf
from multitask import ConfigurationError, Document

PAGE = """<!doctype html>
<html lang=en><head><title> Quarterly   &amp; more </title><meta charset="utf-8">
<link rel=stylesheet href=x.css><style>p { color: red } /* <p>no</p> */</style>
<script>document.write("<p>Name0</p>"); if (a < b) {}</script></head>
<body>
  <nav aria-hidden="true">Skip to content</nav>
  <h1>Hello,   <b>world</b>!</h1>
  <p>One &amp; two&nbsp;three
     four &lt;five&gt; &copy 2024&#33; &#x263A; &unknown; stop.</p>
  <div hidden>secret <div>nested</div> still secret</div>
  <p style="color: blue; DISPLAY: none !important">not shown</p>
  <ul><li>first<li hidden>second<li>third</ul>
  <pre>
  kept   as
	written</pre>
  line<br>break<br/>again
  <table><tr><th>a<th>b</tr><tr><td>1</td><td>2</td></tr></table>
  <noscript>enable js</noscript><template><p>later</p></template>
  <p>end<!-- a comment --> of page</p>
</body></html>"""

VISIBLE = (
    "Hello, world!\n\n"
    "One & two\xa0three four <five> © 2024! ☺ &unknown; stop.\n\n"
    "first\nthird\n\n"
    "  kept   as\n\twritten\n\n"
    "line\nbreak\nagain\n\n"
    "a\tb\n1\t2\n\n"
    "end of page"
)


def assert_traced(html: str, document: Document) -> None:
    """Each character of the text comes from the source place its map says: the same
    character, the `&` of the entity it decodes, or (a space or line break made) whitespace or
    a tag."""
    for i, char in enumerate(document.text):
        at = document.source_offset(i)
        assert at is not None, (i, char)
        assert 0 <= at < len(html), (i, char)
        if char in " \n\t":
            assert html[at] in " \t\n\r\f<" or html[at] == char, (i, char, html[at : at + 10])
        else:
            assert html[at] in (char, "&"), (i, char, html[at : at + 10])


def test_a_page_reads_as_a_browser_shows_it() -> None:
    document = Document.from_html(PAGE, url="https://example.com/q")
    assert document.text == VISIBLE
    assert document.metadata["title"] == "Quarterly & more"
    assert document.metadata["url"] == "https://example.com/q"
    assert document.pages == ()
    assert_traced(PAGE, document)


def test_offsets_lead_back_to_the_words_and_entities_in_the_html() -> None:
    document = Document.from_html(PAGE)
    for word in ("world", "four", "third", "kept   as", "written", "again", "of page"):
        start = document.text.index(word)
        at = document.source_offset(start)
        assert at is not None
        assert PAGE[at : at + len(word)] == word
    amp = document.text.index("&")
    at = document.source_offset(amp)
    assert at is not None
    assert PAGE.startswith("&amp;", at)
    copy = document.text.index("©")
    at = document.source_offset(copy)
    assert at is not None
    assert PAGE.startswith("&copy 2024", at)
    runs = document.metadata["source_offsets"]
    assert runs[0] == (0, PAGE.index("Hello"))
    assert list(runs) == sorted(runs)
    # runs, not a pair per character: a paragraph of words between single spaces is one
    long = Document.from_html("<p>" + "word " * 1000 + "</p>")
    assert long.metadata["source_offsets"] == ((0, 3),)


def test_hidden_parts_and_markup_never_show() -> None:
    text = Document.from_html(PAGE).text
    for hidden in ("Name0", "color", "Skip", "secret", "nested", "not shown", "second", "enable"):
        assert hidden not in text
    assert "later" not in text  # a template's content
    assert "comment" not in text


def test_whitespace_collapses_outside_pre_but_not_nbsp() -> None:
    html = "<p>  a \n\t b&nbsp;&nbsp;c  </p>   <p>\r\nd</p><pre>\r\nx\r\ny\rz</pre>"
    document = Document.from_html(html)
    assert document.text == "a b\xa0\xa0c\n\nd\n\nx\ny\nz"
    assert_traced(html, document)


def test_a_page_without_markup_or_title_is_its_text() -> None:
    document = Document.from_html("just   words &amp; more")
    assert document.text == "just words & more"
    assert "title" not in document.metadata
    assert "url" not in document.metadata
    assert Document.from_html("").text == ""
    with pytest.raises(TypeError, match="decode it first"):
        Document.from_html(b"<p>x</p>")  # type: ignore[arg-type]


def test_a_plain_documents_offsets_are_its_own() -> None:
    document = Document("plain text")
    assert document.source_offset(3) is None
    with pytest.raises(IndexError):
        document.source_offset(10)
    with pytest.raises(IndexError):
        Document.from_html("<p>ab</p>").source_offset(-1)


PIECES = st.sampled_from(
    [
        "<p>", "</p>", "<div>", "</div>", "<br>", "<b>", "</b>", "<li>", "<pre>", "</pre>",
        "<span hidden>", "</span>", "<script>x<y</script>", "&amp;", "&lt;", "&#65;", "&copy",
        "&nbsp;", " ", "  ", "\n", "\r\n", "\t", "word", "Name1", "x", "<!-- c -->", "<td>",
        "<h2>", "</h2>", "<title>t</title>", "&bogus;", "<p aria-hidden=true>",
    ]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(PIECES, max_size=40))
def test_every_character_made_traces_back_into_the_html(pieces: list[str]) -> None:
    html = "".join(pieces)
    document = Document.from_html(html)
    assert_traced(html, document)
    assert document.text == document.text.strip(" \n\t") or "<pre>" in html
    assert "\n\n\n" not in document.text or "<pre>" in html or "<br>" in html
    assert "  " not in document.text or "<pre>" in html


# -- PDFs ----------------------------------------------------------------------------------------

PAGES = ["Invoice 17 from Name1.\nTotal due: 40 EUR.", "Name2 signs here.", "Thanks, Name3 (c)"]


def test_a_pdfs_text_layer_with_where_each_page_begins() -> None:
    document = Document.from_pdf(text_pdf(PAGES, title="Invoice 17"))
    assert len(document.pages) == 3
    assert document.metadata == {"page_count": 3, "title": "Invoice 17"}
    for number, (page, start) in enumerate(zip(PAGES, document.pages, strict=True), 1):
        first_line = page.split("\n")[0]
        assert document.text.startswith(first_line, start)
        name = f"Name{number}"
        assert document.page_of(document.text.index(name)) == number
    # the pages' texts, as pypdf reads them, joined by the separator
    reader = PdfReader(io.BytesIO(text_pdf(PAGES)))
    assert document.text == "\n\n".join(p.extract_text() for p in reader.pages)


def test_a_pdf_from_a_path_names_its_file_and_takes_a_separator(tmp_path: Path) -> None:
    path = tmp_path / "scan.pdf"
    path.write_bytes(text_pdf(["one", "two"]))
    document = Document.from_pdf(path, page_separator="\f")
    assert document.metadata == {"page_count": 2, "name": "scan.pdf"}
    assert document.text.count("\f") == 1
    assert document.text[document.pages[1] - 1] == "\f"
    assert document.text[document.pages[1] :].startswith("two")
    assert Document.from_pdf(str(path)).text == Document.from_pdf(path.read_bytes()).text


def test_an_empty_page_still_counts() -> None:
    document = Document.from_pdf(text_pdf(["Name1", "", "Name3"]))
    assert document.metadata["page_count"] == 3
    assert document.page_of(document.text.index("Name3")) == 3


def test_what_is_not_a_readable_pdf_says_so() -> None:
    with pytest.raises(ValueError, match="not a PDF pypdf can read"):
        Document.from_pdf(b"<html>not a pdf</html>")
    with pytest.raises(TypeError, match="bytes or a path"):
        Document.from_pdf(12)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        Document.from_pdf("/nonexistent/file.pdf")


def test_an_encrypted_pdf_needs_its_password() -> None:
    writer = PdfWriter(clone_from=io.BytesIO(text_pdf(["Name1 in secret"])))
    writer.encrypt("s3cret", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    with pytest.raises(ValueError, match="encrypted: give its password"):
        Document.from_pdf(out.getvalue())
    assert "Name1 in secret" in Document.from_pdf(out.getvalue(), password="s3cret").text


def test_without_pypdf_one_line_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pypdf", None)
    with pytest.raises(ConfigurationError) as caught:
        Document.from_pdf(text_pdf(["x"]))
    assert str(caught.value) == 'reading a PDF\'s text needs pypdf: pip install "multitask[pdf]"'
    assert multitask.Document is Document


@pytest.mark.parametrize(
    ("html", "visible"),
    [
        ("<ul><li hidden>gone</ul>after", "after"),
        ("<ul><li hidden><b>gone</b> too<li>kept</ul>", "kept"),
        ("<p hidden>gone<div>kept</div>", "kept"),
        ("<div><p hidden>gone</div>kept", "kept"),
        ("<table><tr><td hidden>gone<td>kept</table>", "kept"),
        ("<dl><dt hidden>gone<dd>kept</dl>", "kept"),
        ("<div hidden><div>gone</div>gone</div>kept", "kept"),
        ("<ul><li hidden>gone<ul><li>gone</ul>gone<li>kept</ul>", "kept"),
        ("<table><tr hidden><td>gone<table><tr><td>gone</table><tr><td>kept</table>", "kept"),
    ],
)
def test_a_hidden_element_ends_where_the_browser_ends_it(html: str, visible: str) -> None:
    assert Document.from_html(html).text == visible
