#!/usr/bin/python3
"""Helpers for tests/data/test_tokenizer.sh.

  tokenizer_corpus.py corpus [N_RANDOM SEED]   tricky texts, then N_RANDOM random ones, one per line in hex
  tokenizer_corpus.py classes                   Unicode classes of every code point according to Python's
                                                regex module: runs "lo hi class" of L (\\p{L}), N (\\p{N}),
                                                S (\\p{White_Space}), the format of `tokenizer_driver classes`
"""
import random
import sys

try:
    import regex
except ImportError:
    sys.stderr.write("error: the Python module 'regex' is missing: install python3-regex (apt-get install python3-regex)\n")
    sys.exit(1)


def tricky():
    """Texts written to hit every branch of the GPT-2 pattern and of UTF-8 handling. bytes, not str, so that
    invalid UTF-8 can be written down."""
    t = [
        "Hello world",
        "Hello, world! How's it going? I'm fine; you'd've thought so.",
        "'s 't 're 've 'm 'll 'd",
        "'S 'T 'RE 'Ve 'LL 'D",  # contractions are case-sensitive
        "it's they're we've I'm you'll he'd",
        "don't 'sup ''s '''re 'x 'r 'l 'v '",
        "rock'n'roll o'clock",
        " 's  's\n's",
        "'",
        "''",
        " ",
        "  ",
        "a  b   c    d",
        "trailing spaces   ",
        "   leading spaces",
        "\n",
        "\n\n\n",
        "line one\nline two\n\nparagraph\n\n\n\nfour newlines",
        "tabs\tand\t\ttwo tabs\t",
        " \t \n mixed \t\n white \n\t",
        "end with newline\n",
        "word\n word \nword",
        "\r\nwindows\r\nline\r\n",
        "x\x0bvertical\x0cform feed",
        "\x1c\x1d\x1e\x1f file/group/record/unit separators \x1cx x\x1c",  # not White_Space
        "\x00 nul \x01\x02 controls \x7f",
        "no\u00a0break\u00a0space \u00a0 x",
        "ideographic\u3000space\u3000\u3000x",
        "next\u0085line \u0085x",
        "line\u2028separator\u2029paragraph",
        "en\u2002quad\u200ahair\u202fnarrow\u205fmath\u1680ogham",
        "zero\u200bwidth\u200cspaces\ufeffnot white",
        "café naïve résumé Ångström Øresund",
        "cafe\u0301 (combining acute) e\u0301\u0301\u0301 \u0301start",
        "Ελληνικά κείμενο, русский текст, עברית, العربية",
        "日本語のテキスト、中文文本。한국어 텍스트",
        "हिन्दी पाठ देवनागरी",
        "Devanagari digits ०१२३४५६७८९ and Arabic-Indic ٠١٢٣٤٥٦٧٨٩ and Extended ۰۱۲",
        "fullwidth ０１２３ ＡＢＣ ！？",
        "numbers 12345 3.14159 1,000,000 -42 +7e10 0x1F",
        "roman Ⅻ ⅷ fractions ½ ¾ superscript ² ³ circled ① ⑳",
        "a1b2c3 abc123def 123abc",
        "emoji 😀 😀😀 🎉🎉🎉 👍🏽",
        "family 👨‍👩‍👧‍👦 ZWJ sequence, rainbow flag 🏳️‍🌈, flag 🇫🇷",
        "keycap 1️⃣ #️⃣",
        "math ∑∫∂√∞≠≤≥ symbols €£¥₹ ©®™",
        "punct... !!! ??? --- *** ((( ))) [[]] {{}}",
        "ab---cd  ---  ,,,,",
        "mixed: a,b;c.d!e?f",
        "email: someone@example.com, url: https://example.com/path?q=1&r=2#frag",
        "code: def f(x): return x**2  # comment\n\tif (a && b) { c++; }",
        "<|endoftext|>",
        "before<|endoftext|>after",
        " <|endoftext|> <|endoftext|>\n<|endoftext|>",
        "<|endoftext|<|endoftext|>|>",
        "Ümlaut ÜBER über ß ẞ",
        "ǅ titlecase ǈ",
        "modifier letters ʰ ʲ ˈ",
        "Thai ภาษาไทย Lao ພາສາລາວ Khmer ភាសាខ្មែរ",
        "Tamil தமிழ் ௧௨௩",
        "Hangul jamo 각",
        "surrogate-range private use \ue000\uf8ff plane 15 \U000f0000",
        "astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟎𝟏𝟐 𐍈",
        "long " + "a" * 300 + " " + "9" * 200 + " " + "!" * 150,
        " " * 100 + "x",
        "\n" * 50 + "y" + " \n" * 20,
        "x" + "\t" * 30,
    ]
    # one long chunk of random letters: the heap BPE path (chunks >= 64 bytes) on a real workload
    rng = random.Random(7)
    t.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(3000)))
    out = [s.encode("utf-8") for s in t]
    # invalid UTF-8 and edge cases of well-formedness (Unicode Table 3-7)
    out += [
        b"\x80",  # lone continuation byte
        b"abc\x80\x81\x82def",
        b"\xff\xfe\xfd",
        b"\xc0\xaf \xc1\xbf",  # overlong 2-byte forms of '/' and DEL
        b"\xe0\x80\xaf \xe0\x9f\xbf",  # overlong 3-byte forms
        b"\xf0\x80\x80\xaf \xf0\x8f\xbf\xbf",  # overlong 4-byte forms
        # overlong forms of letters, digits and spaces: decoded leniently they would join words or split them
        b"ab\xe0\x81\xa1\xe0\x81\xa2cd x\xe0\x80\xa0y \xf0\x80\x81\xa1z \xc1\xa1 12\xe0\x80\xb134 \xe0\x83\xa9t\xe0\x80\x8a",
        b"\xed\xa0\x80 \xed\xbf\xbf \xed\xa0\xbd\xed\xb8\x80",  # surrogates (incl. a CESU-8 pair for U+1F600)
        b"\xed\x9f\xbf",  # U+D7FF, the last code point before the surrogates: valid
        b"\xee\x80\x80",  # U+E000: valid
        b"\xf4\x8f\xbf\xbf \xf4\x90\x80\x80",  # U+10FFFF valid, U+110000 invalid
        b"\xf5\x80\x80\x80 \xf8\x88\x80\x80\x80",  # 5-byte lead bytes
        b"truncated \xe4\xbd end \xf0\x9f\x98",  # sequences cut short
        b"\xe4\xbd",  # cut short at the end of the text
        b"word\xc3 \xc3word \xc3",
        b" \x80 \x80\x80word",
        b"'\x80s '\xe2\x80\x99s",  # curly apostrophe is not a contraction
        b"\xc2\xa0\xa0\xc2",
        b"a\xffb\xfe c\xef\xbb\xbfd",  # BOM in the middle
        bytes(range(256)),
        bytes(range(255, -1, -1)),
    ]
    return out


def random_texts(n, seed):
    """Random texts from a mix of alphabets, so that boundaries between classes occur everywhere."""
    rng = random.Random(seed)
    alphabet = (
        list("abcXYZ019 '.,!?-\n\t\r\x1c")
        + ["'s", "'re", "'ll", "  ", "\n\n", " \n"]
        + list("éß日本ä\u0301\u00a0\u3000\u0085\u2028٣०５😀\u200d\ufe0f")
    )
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randrange(0, 40)):
            r = rng.random()
            if r < 0.1:
                parts.append(bytes([rng.randrange(256)]))  # often invalid
            else:
                parts.append(rng.choice(alphabet).encode("utf-8"))
        out.append(b"".join(parts) or b"x")
    return out


def classes():
    names = [("L", r"\p{L}+"), ("N", r"\p{N}+"), ("S", r"\p{White_Space}+")]
    everything = "".join(chr(c) for c in range(0x110000))
    runs = []
    for name, pat in names:
        for m in regex.finditer(pat, everything):
            runs.append((m.start(), m.end() - 1, name))
    runs.sort()
    for lo, hi, name in runs:
        print(f"{lo:X} {hi:X} {name}")


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "classes":
        classes()
    elif len(sys.argv) >= 2 and sys.argv[1] == "corpus":
        n = int(sys.argv[2]) if len(sys.argv) > 2 else 0
        seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
        for t in tricky() + random_texts(n, seed):
            print(t.hex())  # every text is non-empty: readers skip blank lines
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
