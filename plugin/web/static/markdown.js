/* A small, safe Markdown renderer for CDS card details.
 *
 * Supports the subset the cards use: paragraphs, **bold**, *italic* / _italic_, `code`,
 * bullet and numbered lists, GitHub tables (with :--: alignment), ### headings and
 * [links](https://...). Everything is HTML-escaped first, so no markup from a card ever
 * reaches the page as HTML; links are kept only for http(s) URLs.
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

  // Inline formatting on one line of raw text. Code spans are cut out first so nothing
  // inside them is formatted; the rest is escaped, then formatted.
  function inline(raw) {
    var parts = String(raw).split(/(`[^`]*`)/);
    return parts.map(function (part) {
      if (part.length >= 2 && part.charAt(0) === "`" && part.charAt(part.length - 1) === "`") {
        return "<code>" + escapeHtml(part.slice(1, -1)) + "</code>";
      }
      var html = escapeHtml(part);
      html = html.replace(/\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g, function (_, label, url) {
        return '<a href="' + url + '" target="_blank" rel="noopener noreferrer">' + label + "</a>";
      });
      html = html.replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>");
      html = html.replace(/__([^_]+)__/g, "<strong>$1</strong>");
      html = html.replace(/(^|[^*\w])\*([^*\s][^*]*)\*(?!\w)/g, "$1<em>$2</em>");
      html = html.replace(/(^|[^_\w])_([^_\s][^_]*)_(?!\w)/g, "$1<em>$2</em>");
      return html;
    }).join("");
  }

  function splitRow(line) {
    var trimmed = line.trim().replace(/^\|/, "").replace(/\|$/, "");
    return trimmed.split("|").map(function (cell) { return cell.trim(); });
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

  function render(markdown) {
    var lines = String(markdown || "").replace(/\r\n?/g, "\n").split("\n");
    var out = [];
    var i = 0;
    while (i < lines.length) {
      var line = lines[i];
      if (!line.trim()) { i += 1; continue; }
      var heading = /^(#{1,6})\s+(.*)$/.exec(line);
      if (heading) {
        var level = Math.min(6, heading[1].length + 2); // card headings sit below the summary
        out.push("<h" + level + ">" + inline(heading[2]) + "</h" + level + ">");
        i += 1;
        continue;
      }
      if (/^\s*\|/.test(line) && i + 1 < lines.length && isTableDivider(lines[i + 1])) {
        var rows = [line, lines[i + 1]];
        i += 2;
        while (i < lines.length && /^\s*\|/.test(lines[i])) { rows.push(lines[i]); i += 1; }
        out.push(table(rows));
        continue;
      }
      var bullet = /^\s*[-*+]\s+/, numbered = /^\s*\d+[.)]\s+/;
      if (bullet.test(line) || numbered.test(line)) {
        var ordered = numbered.test(line) && !bullet.test(line);
        var marker = ordered ? numbered : bullet;
        var items = [];
        while (i < lines.length && marker.test(lines[i])) {
          var item = lines[i].replace(marker, "");
          i += 1;
          while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !marker.test(lines[i])) {
            item += " " + lines[i].trim();
            i += 1;
          }
          items.push("<li>" + inline(item) + "</li>");
        }
        out.push((ordered ? "<ol>" : "<ul>") + items.join("") + (ordered ? "</ol>" : "</ul>"));
        continue;
      }
      var para = [];
      while (i < lines.length && lines[i].trim() && !/^\s*\|/.test(lines[i]) &&
             !bullet.test(lines[i]) && !numbered.test(lines[i]) && !/^#{1,6}\s/.test(lines[i])) {
        para.push(lines[i].trim());
        i += 1;
      }
      out.push("<p>" + inline(para.join(" ")) + "</p>");
    }
    return out.join("\n");
  }

  global.CardMarkdown = { render: render, escapeHtml: escapeHtml };
})(window);
