from mai_repro.data import wiki

PAGE = """{{Infobox person
| name = Ada Lovelace
| birth_date = {{birth date|1815|12|10}}
| occupation = [[Mathematician]], writer
| image = Ada.jpg
| known_for = [[Analytical Engine|the Analytical Engine]]
}}
'''Ada Lovelace''' was an English [[mathematician]] known for her work on the
[[Analytical Engine|Analytical Engine]].<ref>A source</ref>
== Life ==
She was born in London.
[[Category:1815 births]]
"""


def test_strip_markup_drops_templates_and_link_syntax():
    text = wiki.strip_markup(PAGE)
    assert "Ada Lovelace was an English mathematician" in text
    assert "{{" not in text and "[[" not in text and "Infobox" not in text
    assert "Ada.jpg" not in text


def test_infobox_facts():
    facts = {(f.field, f.value) for f in wiki.infobox_facts("Ada", PAGE)}
    assert ("name", "Ada Lovelace") in facts
    assert ("occupation", "Mathematician, writer") in facts
    assert ("known_for", "the Analytical Engine") in facts
    assert not any(f == "image" for f, _ in facts)


def test_recoverability():
    text = wiki.strip_markup(PAGE)
    facts = {f.field: f for f in wiki.infobox_facts("Ada", PAGE)}
    assert wiki.fact_recoverable(facts["name"], text)  # the lead repeats the name
    assert not wiki.fact_recoverable(facts["occupation"], text)
    assert not wiki.fact_recoverable_with_field(facts["name"], text)
    # the markup gives every fact back to a parser, field and value; the text gives none
    assert all(wiki.recoverable_by_parsing(list(facts.values()), PAGE))
    assert not any(wiki.recoverable_by_parsing(list(facts.values()), text))


def test_redirect():
    assert wiki.is_redirect("#REDIRECT [[Other]]") and not wiki.is_redirect(PAGE)
