#!/usr/bin/env node
// Compile provmint's contracts with the pinned solcjs (package.json) into the artifacts
// provmint ships: src/provmint/contracts/<Name>.json for each contracts/<Name>.sol below.
// Each source is compiled on its own (one source per compiler input), so an artifact
// depends on its source and the settings only. The output is byte-reproducible (no
// metadata hash), so CI recompiles and diffs it:
//   node scripts/compile_contracts.js && git diff --exit-code src/provmint/contracts
"use strict";
const fs = require("fs");
const path = require("path");
const crypto = require("crypto");
const solc = require("solc");

const CONTRACTS = ["AnchorRegistry", "ProvmintVerifier"];
const root = path.resolve(__dirname, "..");
const settings = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "cancun",
  metadata: { bytecodeHash: "none" },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

function compile(name) {
  const file = `${name}.sol`;
  const source = fs.readFileSync(path.join(root, "contracts", file), "utf8");
  const input = { language: "Solidity", sources: { [file]: { content: source } }, settings };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
  if ((output.errors || []).some((e) => e.severity === "error")) process.exit(1);
  const contract = output.contracts[file][name];
  const artifact = {
    contractName: name,
    compiler: `solc ${solc.version()}`,
    settings: { optimizer: settings.optimizer, evmVersion: settings.evmVersion, metadata: settings.metadata },
    sourceSha256: crypto.createHash("sha256").update(source).digest("hex"),
    abi: contract.abi,
    bytecode: "0x" + contract.evm.bytecode.object,
    deployedBytecode: "0x" + contract.evm.deployedBytecode.object,
  };
  const outPath = path.join(root, "src", "provmint", "contracts", `${name}.json`);
  fs.mkdirSync(path.dirname(outPath), { recursive: true });
  fs.writeFileSync(outPath, JSON.stringify(artifact, null, 2) + "\n");
  process.stdout.write(`wrote ${path.relative(root, outPath)}\n`);
}

for (const name of CONTRACTS) compile(name);
