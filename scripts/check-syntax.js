// Syntax check for the app demos' sources where no Swift or Android toolchain exists: parses each file with
// tree-sitter (Swift for .swift, Kotlin for .kt / .kts) and reports every ERROR or MISSING node with its line
// and column. Grammar only: no types, no imports resolved.
//   NODE_PATH=<node_modules with tree-sitter and the grammars> node scripts/check-syntax.js FILE...
// scripts/install-app-deps.sh installs the packages; exit status 1 when any file has a syntax error.
"use strict";
const fs = require("fs");
const path = require("path");
const Parser = require("tree-sitter");

const GRAMMARS = {
  ".swift": "tree-sitter-swift",
  ".kt": "@tree-sitter-grammars/tree-sitter-kotlin",
  ".kts": "@tree-sitter-grammars/tree-sitter-kotlin",
};
const parsers = {};

function parserFor(file) {
  const grammar = GRAMMARS[path.extname(file)];
  if (!grammar) throw new Error(`${file}: no grammar for this extension`);
  if (!parsers[grammar]) {
    parsers[grammar] = new Parser();
    parsers[grammar].setLanguage(require(grammar));
  }
  return parsers[grammar];
}

function problems(node, out) {
  if (node.type === "ERROR" || node.isMissing) {
    const what = node.isMissing ? `missing ${node.type}` : "syntax error";
    out.push(`${node.startPosition.row + 1}:${node.startPosition.column + 1}: ${what}`);
    if (node.type === "ERROR") return out; // its children are the unparsed text, not further findings
  }
  if (node.hasError) for (const child of node.children) problems(child, out);
  return out;
}

let bad = 0;
const files = process.argv.slice(2);
for (const file of files) {
  const text = fs.readFileSync(file, "utf8");
  // the callback form: the node binding rejects a plain string longer than 32 KiB
  const tree = parserFor(file).parse((index) => text.slice(index, index + 4096));
  const found = problems(tree.rootNode, []);
  if (found.length) {
    bad += 1;
    for (const line of found) console.log(`${file}:${line}`);
  }
}
console.log(`${files.length} files parsed, ${bad} with syntax errors`);
process.exit(bad || files.length === 0 ? 1 : 0);
