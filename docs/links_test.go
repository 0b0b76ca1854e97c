package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestLinks checks every relative Markdown link of README.md and docs/*.md:
// its file exists and, into a Markdown file, its anchor names a heading.
func TestLinks(t *testing.T) {
	pages, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	pages = append(pages, filepath.Join("..", "README.md"))
	if len(pages) < 10 {
		t.Fatalf("found %d pages (%v); the reference is split into ten docs/*.md", len(pages), pages)
	}
	anchors := map[string][]string{}
	read := func(page string) string {
		data, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	for _, page := range pages {
		text := read(page)
		links := markdownLinks(text)
		if len(links) == 0 && filepath.Base(page) == "README.md" {
			t.Errorf("%s links to nothing: it is the landing page of docs/", page)
		}
		for _, link := range links {
			if regexp.MustCompile(`^[a-z]+:`).MatchString(link) {
				continue
			}
			file, anchor, _ := strings.Cut(link, "#")
			target := page
			if file != "" {
				target = filepath.Join(filepath.Dir(page), filepath.FromSlash(file))
				if _, err := os.Stat(target); err != nil {
					t.Errorf("%s: link %s: %v", page, link, err)
					continue
				}
			}
			if anchor == "" || !strings.HasSuffix(target, ".md") {
				continue
			}
			if _, ok := anchors[target]; !ok {
				anchors[target] = headingAnchors(read(target))
			}
			if !slices.Contains(anchors[target], anchor) {
				t.Errorf("%s: link %s: %s has no heading #%s", page, link, target, anchor)
			}
		}
	}
}

// TestMarkdownLinks shows what the link check reads: links outside code,
// and headings' anchors as GitHub makes them.
func TestMarkdownLinks(t *testing.T) {
	text := "# Top\n\nSee [a](a.md#x-y) and `[b](b.md)`.\n\n```\n[c](c.md)\n# not a heading\n```\n\n" +
		"## F&O notes: `x_y` (1)\n\n## Top\n\n![img](p.png) [d](#top-1)\n"
	if got, want := markdownLinks(text), []string{"a.md#x-y", "p.png", "#top-1"}; !slices.Equal(got, want) {
		t.Errorf("links %q, want %q", got, want)
	}
	if got, want := headingAnchors(text), []string{"top", "fo-notes-x_y-1", "top-1"}; !slices.Equal(got, want) {
		t.Errorf("anchors %q, want %q", got, want)
	}
}

var (
	linkRE   = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	codeRE   = regexp.MustCompile("`[^`]*`")
	headRE   = regexp.MustCompile(`^#{1,6} +(.+?) *$`)
	unslugRE = regexp.MustCompile(`[^\p{L}\p{N}_\- ]`)
)

// proseLines calls f with each line outside fenced code blocks, its inline
// code removed.
func proseLines(text string, f func(line string)) {
	fenced := false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
			continue
		}
		if !fenced {
			f(codeRE.ReplaceAllString(line, ""))
		}
	}
}

func markdownLinks(text string) []string {
	var links []string
	proseLines(text, func(line string) {
		for _, m := range linkRE.FindAllStringSubmatch(line, -1) {
			links = append(links, m[1])
		}
	})
	return links
}

// headingAnchors gives the anchor of each heading as GitHub makes it:
// lower case, punctuation dropped, spaces to dashes, -1, -2 ... on repeats.
// Inline code in a heading keeps its text.
func headingAnchors(text string) []string {
	var anchors []string
	seen := map[string]int{}
	fenced := false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
		}
		m := headRE.FindStringSubmatch(line)
		if fenced || m == nil {
			continue
		}
		slug := strings.ReplaceAll(unslugRE.ReplaceAllString(strings.ToLower(m[1]), ""), " ", "-")
		if n := seen[slug]; n > 0 {
			anchors = append(anchors, slug+"-"+strconv.Itoa(n))
		} else {
			anchors = append(anchors, slug)
		}
		seen[slug]++
	}
	return anchors
}
