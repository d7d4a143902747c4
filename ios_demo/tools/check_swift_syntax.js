// Syntax check for Swift sources without a Swift toolchain: parses each file with tree-sitter-swift and reports
// every ERROR or MISSING node with its line and column. Grammar only (no types, no imports resolved).
//   NODE_PATH=<folder with tree-sitter and tree-sitter-swift> node check_swift_syntax.js FILE.swift...
// scripts/install-app-deps.sh installs both packages; exit status 1 when any file has a syntax error.
"use strict";
const fs = require("fs");
const Parser = require("tree-sitter");
const Swift = require("tree-sitter-swift");

function problems(node, out) {
  if (node.type === "ERROR" || node.isMissing) {
    const what = node.isMissing ? `missing ${node.type}` : "syntax error";
    out.push(`${node.startPosition.row + 1}:${node.startPosition.column + 1}: ${what}`);
    if (node.type === "ERROR") return out; // its children are the unparsed text, not further findings
  }
  if (node.hasError) for (const child of node.children) problems(child, out);
  return out;
}

const parser = new Parser();
parser.setLanguage(Swift);
let bad = 0;
const files = process.argv.slice(2);
for (const file of files) {
  // the callback form: tree-sitter's node binding rejects a plain string longer than 32 KiB
  const text = fs.readFileSync(file, "utf8");
  const tree = parser.parse((index) => text.slice(index, index + 4096));
  const found = problems(tree.rootNode, []);
  if (found.length) {
    bad += 1;
    for (const line of found) console.log(`${file}:${line}`);
  }
}
console.log(`${files.length} files parsed, ${bad} with syntax errors`);
process.exit(bad || files.length === 0 ? 1 : 0);
