#!/usr/bin/env node
// Compile contracts/AnchorRegistry.sol with the pinned solcjs (package.json) into the
// artifact provmint ships: src/provmint/contracts/AnchorRegistry.json.
// The output is byte-reproducible (no metadata hash), so CI recompiles and diffs it:
//   node scripts/compile_registry.js && git diff --exit-code src/provmint/contracts
"use strict";
const fs = require("fs");
const path = require("path");
const crypto = require("crypto");
const solc = require("solc");

const root = path.resolve(__dirname, "..");
const sourcePath = path.join(root, "contracts", "AnchorRegistry.sol");
const outPath = path.join(root, "src", "provmint", "contracts", "AnchorRegistry.json");
const source = fs.readFileSync(sourcePath, "utf8");
const settings = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "cancun",
  metadata: { bytecodeHash: "none" },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};
const input = { language: "Solidity", sources: { "AnchorRegistry.sol": { content: source } }, settings };
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
if (errors.length) process.exit(1);
const contract = output.contracts["AnchorRegistry.sol"].AnchorRegistry;
const artifact = {
  contractName: "AnchorRegistry",
  compiler: `solc ${solc.version()}`,
  settings: { optimizer: settings.optimizer, evmVersion: settings.evmVersion, metadata: settings.metadata },
  sourceSha256: crypto.createHash("sha256").update(source).digest("hex"),
  abi: contract.abi,
  bytecode: "0x" + contract.evm.bytecode.object,
  deployedBytecode: "0x" + contract.evm.deployedBytecode.object,
};
fs.mkdirSync(path.dirname(outPath), { recursive: true });
fs.writeFileSync(outPath, JSON.stringify(artifact, null, 2) + "\n");
process.stdout.write(`wrote ${path.relative(root, outPath)}\n`);
