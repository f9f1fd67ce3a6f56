import textwrap

from appliance.config.lines import key_lines, line_of


def test_tables_arrays_of_tables_and_dotted_keys():
    text = textwrap.dedent(
        """\
        top = 1
        [a]
        b.c = "x"   # comment = not a key
        "quoted.key" = 2
        [[t.items]]
        v = 1
        [[t.items]]
        v = '''
        k = not a key
        '''
        w = [
          "x = y",
          [1, 2],
        ]
        after = true
        """
    )
    lines = key_lines(text)
    assert lines[("top",)] == 1
    assert lines[("a",)] == 2
    assert lines[("a", "b", "c")] == 3
    assert lines[("a", "quoted.key")] == 4
    assert lines[("t", "items", 0)] == 5 and lines[("t", "items", 0, "v")] == 6
    assert lines[("t", "items", 1, "v")] == 8
    assert lines[("t", "items", 1, "w")] == 11
    assert lines[("t", "items", 1, "after")] == 15
    assert ("t", "items", 1, "k") not in lines and ("t", "items", 1, "x") not in lines


def test_unwritten_keys_fall_back_to_their_table():
    lines = key_lines("[turn]\nrealm = 'r'\n")
    assert line_of(lines, ("turn", "listen", 0)) == 1
    assert line_of(lines, ("api", "listen")) == 1
