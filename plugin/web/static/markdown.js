/* A small, safe Markdown renderer for CDS card details.
 *
 * Supports the subset the cards use: paragraphs, **bold**, *italic* / _italic_, `code` (with
 * longer fences), backslash escapes, bullet and numbered lists, GitHub tables (with :--:
 * alignment), ### headings and [links](https://...). Everything is HTML-escaped first, so no
 * markup from a card ever reaches the page as HTML; links are kept only for http(s) URLs.
 * Every loop consumes input, so any text renders in time linear in its size.
 */
(function (global) {
  "use strict";

  function escapeHtml(text) {
    return String(text)
      .replace(/&/g, "&amp;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;")
      .replace(/'/g, "&#39;");
  }

  // Backslash escapes (any ASCII punctuation, CommonMark 2.4) and code spans (a run of
  // backticks up to the next run of the same length, CommonMark 6.1) are literal text: they are
  // cut out into placeholders before the rest is escaped and formatted, and put back after.
  // The service quotes data from FHIR with exactly these two forms (plugin/markdown.py).
  var ESCAPABLE = /[!-\/:-@\[-`{-~]/;
  var OPEN = "\uE000", CLOSE = "\uE001", DIGIT0 = 0xE010;

  function placeholder(index) {
    var digits = String(index).split("").map(function (d) {
      return String.fromCharCode(DIGIT0 + Number(d));
    });
    return OPEN + digits.join("") + CLOSE;
  }

  function literals(raw) {
    var text = String(raw), kept = [], plain = "", i = 0;
    // the start of every backtick run, by its length, to find a closing run in one pass
    var runs = {}, next = {}, found, pattern = /`+/g;
    while ((found = pattern.exec(text)) !== null) {
      (runs[found[0].length] = runs[found[0].length] || []).push(found.index);
    }
    while (i < text.length) {
      var ch = text.charAt(i);
      if (ch === "\\" && i + 1 < text.length && ESCAPABLE.test(text.charAt(i + 1))) {
        kept.push(escapeHtml(text.charAt(i + 1)));
        plain += placeholder(kept.length - 1);
        i += 2;
        continue;
      }
      if (ch === "`") {
        var size = /^`+/.exec(text.slice(i, i + 1000))[0].length;
        var starts = runs[size] || [], at = next[size] || 0;
        while (at < starts.length && starts[at] <= i) { at += 1; }
        next[size] = at;
        if (size < 1000 && at < starts.length) {
          var content = text.slice(i + size, starts[at]);
          if (content.length > 2 && content.charAt(0) === " " &&
              content.charAt(content.length - 1) === " " && /[^ ]/.test(content)) {
            content = content.slice(1, -1);
          }
          kept.push("<code>" + escapeHtml(content) + "</code>");
          plain += placeholder(kept.length - 1);
          i = starts[at] + size;
          next[size] = at + 1;
          continue;
        }
        plain += text.slice(i, i + size);  // no closing run: the backticks are text
        i += size;
        continue;
      }
      plain += ch;
      i += 1;
    }
    return { text: plain, kept: kept };
  }

  var PLACEHOLDER = new RegExp(OPEN + "([\uE010-\uE019]+)" + CLOSE, "g");

  // Inline formatting on one line of raw text: literals cut out, the rest escaped, then
  // formatted, then the literals put back.
  function inline(raw) {
    var cut = literals(raw);
    var html = escapeHtml(cut.text);
    html = html.replace(/\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g, function (_, label, url) {
      return '<a href="' + url + '" target="_blank" rel="noopener noreferrer">' + label + "</a>";
    });
    html = html.replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>");
    html = html.replace(/__([^_]+)__/g, "<strong>$1</strong>");
    html = html.replace(/(^|[^*\w])\*([^*\s][^*]*)\*(?!\w)/g, "$1<em>$2</em>");
    html = html.replace(/(^|[^_\w])_([^_\s][^_]*)_(?!\w)/g, "$1<em>$2</em>");
    return html.replace(PLACEHOLDER, function (_, digits) {
      var index = Number(digits.split("").map(function (d) {
        return String(d.charCodeAt(0) - DIGIT0);
      }).join(""));
      return cut.kept[index];
    });
  }

  // The cells of a table row; an escaped "\|" is part of a cell, not a border.
  function splitRow(line) {
    var text = line.trim(), cells = [], cell = "", i = 0;
    if (text.charAt(0) === "|") { i = 1; }
    while (i < text.length) {
      var ch = text.charAt(i);
      if (ch === "\\" && i + 1 < text.length) {
        cell += ch + text.charAt(i + 1);
        i += 2;
        continue;
      }
      if (ch === "|") {
        cells.push(cell.trim());
        cell = "";
      } else {
        cell += ch;
      }
      i += 1;
    }
    if (cell.trim() || !/\|$/.test(text) || /\\\|$/.test(text)) { cells.push(cell.trim()); }
    return cells;
  }

  function isTableDivider(line) {
    return /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$/.test(line);
  }

  function table(lines) {
    var head = splitRow(lines[0]);
    var aligns = splitRow(lines[1]).map(function (cell) {
      var left = cell.charAt(0) === ":", right = cell.charAt(cell.length - 1) === ":";
      return right && left ? "center" : right ? "right" : left ? "left" : "";
    });
    function cellHtml(tag, text, index) {
      var align = aligns[index] ? ' class="align-' + aligns[index] + '"' : "";
      return "<" + tag + align + ">" + inline(text) + "</" + tag + ">";
    }
    var html = "<table><thead><tr>";
    head.forEach(function (text, i) { html += cellHtml("th", text, i); });
    html += "</tr></thead><tbody>";
    lines.slice(2).forEach(function (line) {
      html += "<tr>";
      splitRow(line).forEach(function (text, i) { html += cellHtml("td", text, i); });
      html += "</tr>";
    });
    return html + "</tbody></table>";
  }

  var HEADING = /^(#{1,6})\s+([\s\S]*)$/;
  var BULLET = /^\s*[-*+]\s+/, NUMBERED = /^\s*\d+[.)]\s+/;

  function isTableStart(lines, i) {
    return /^\s*\|/.test(lines[i]) && i + 1 < lines.length && isTableDivider(lines[i + 1]);
  }

  // True when line i opens a block of its own (and so ends a paragraph).
  function opensBlock(lines, i) {
    var line = lines[i];
    return !line.trim() || HEADING.test(line) || BULLET.test(line) || NUMBERED.test(line) ||
      isTableStart(lines, i);
  }

  // Every branch of the loop consumes at least one line, so the loop always ends: a line that
  // starts a block it cannot complete (a lone "|", a "#" with a line separator after it ...)
  // becomes paragraph text.
  function render(markdown) {
    var lines = String(markdown || "").replace(/\r\n?/g, "\n").split("\n");
    var out = [];
    var i = 0;
    while (i < lines.length) {
      var line = lines[i];
      if (!line.trim()) { i += 1; continue; }
      var heading = HEADING.exec(line);
      if (heading) {
        var level = Math.min(6, heading[1].length + 2); // card headings sit below the summary
        out.push("<h" + level + ">" + inline(heading[2]) + "</h" + level + ">");
        i += 1;
        continue;
      }
      if (isTableStart(lines, i)) {
        var rows = [line, lines[i + 1]];
        i += 2;
        while (i < lines.length && /^\s*\|/.test(lines[i])) { rows.push(lines[i]); i += 1; }
        out.push(table(rows));
        continue;
      }
      if (BULLET.test(line) || NUMBERED.test(line)) {
        var ordered = !BULLET.test(line);
        var marker = ordered ? NUMBERED : BULLET;
        var items = [];
        do {
          var item = lines[i].replace(marker, "");
          i += 1;
          while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !marker.test(lines[i])) {
            item += " " + lines[i].trim();
            i += 1;
          }
          items.push("<li>" + inline(item) + "</li>");
        } while (i < lines.length && marker.test(lines[i]));
        out.push((ordered ? "<ol>" : "<ul>") + items.join("") + (ordered ? "</ol>" : "</ul>"));
        continue;
      }
      var para = [line.trim()];
      i += 1;
      while (i < lines.length && !opensBlock(lines, i)) {
        para.push(lines[i].trim());
        i += 1;
      }
      out.push("<p>" + inline(para.join(" ")) + "</p>");
    }
    return out.join("\n");
  }

  global.CardMarkdown = { render: render, escapeHtml: escapeHtml };
})(window);
