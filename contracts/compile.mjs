// Compile Agora's contracts with the pinned npm `solc` (standard JSON) and write
// one artifact per contract: {contractName, abi, bytecode, compiler}.
// Usage: node contracts/compile.mjs OUT_DIR...   (scripts/compile-contracts.sh wraps it)
// The toolchain is resolved from AGORA_NODE_MODULES (default ~/.cache/agora/node/node_modules),
// where scripts/install-tools.sh solc installs contracts/package-lock.json.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { homedir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const nodeModules =
  process.env.AGORA_NODE_MODULES ?? path.join(homedir(), ".cache", "agora", "node", "node_modules");
const require = createRequire(path.join(nodeModules, "noop.js"));
const solc = require("solc");

// Contract name -> source unit that defines it.
const CONTRACTS = {
  AgoraToken: "src/AgoraToken.sol",
  AgoraGovernor: "src/AgoraGovernor.sol",
  AgoraMembership: "src/AgoraMembership.sol",
  AgoraMembersQuadraticGovernor: "src/AgoraMembersQuadraticGovernor.sol",
  AgoraQuadraticGovernor: "src/AgoraQuadraticGovernor.sol",
  PolicyRegistry: "src/PolicyRegistry.sol",
  LogAnchor: "src/LogAnchor.sol",
  TimelockController: "@openzeppelin/contracts/governance/TimelockController.sol",
};

const pinned = JSON.parse(readFileSync(path.join(here, "package.json"), "utf8")).dependencies;
if (!solc.version().startsWith(`${pinned.solc}+`)) {
  throw new Error(`solc ${solc.version()} found in ${nodeModules}, expected ${pinned.solc}`);
}
const ozVersion = require("@openzeppelin/contracts/package.json").version;
if (ozVersion !== pinned["@openzeppelin/contracts"]) {
  throw new Error(`@openzeppelin/contracts ${ozVersion} found, expected ${pinned["@openzeppelin/contracts"]}`);
}

// Source unit names are relative ("src/...", "@openzeppelin/..."), never absolute
// paths, so the output does not depend on where the clone or the cache lives.
function readSource(unit) {
  const file = unit.startsWith("@") ? require.resolve(unit) : path.join(here, unit);
  return readFileSync(file, "utf8");
}

const settings = {
  evmVersion: "cancun",
  optimizer: { enabled: true, runs: 200 },
  // No metadata hash in the bytecode: it would change with comments and paths,
  // while the code itself is what CI compares.
  metadata: { bytecodeHash: "none" },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
};
const input = {
  language: "Solidity",
  sources: Object.fromEntries(
    [...new Set(Object.values(CONTRACTS))].map((unit) => [unit, { content: readSource(unit) }]),
  ),
  settings,
};

function findImports(unit) {
  try {
    return { contents: readSource(unit) };
  } catch (err) {
    return { error: `cannot read ${unit}: ${err.message}` };
  }
}

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const diagnostics = output.errors ?? [];
for (const d of diagnostics) process.stderr.write(d.formattedMessage ?? `${d.message}\n`);
if (diagnostics.some((d) => d.severity === "error")) process.exit(1);

const outDirs = process.argv.slice(2);
if (outDirs.length === 0) {
  process.stderr.write("usage: node contracts/compile.mjs OUT_DIR...\n");
  process.exit(2);
}
const compiler = {
  solc: solc.version(),
  openzeppelin: ozVersion,
  evmVersion: settings.evmVersion,
  optimizerRuns: settings.optimizer.runs,
};
for (const [name, unit] of Object.entries(CONTRACTS)) {
  const contract = output.contracts[unit][name];
  const artifact = {
    contractName: name,
    abi: contract.abi,
    bytecode: `0x${contract.evm.bytecode.object}`,
    compiler,
  };
  const text = `${JSON.stringify(artifact, null, 2)}\n`;
  for (const dir of outDirs) {
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, `${name}.json`), text);
  }
  process.stderr.write(`${name}: ${contract.evm.bytecode.object.length / 2} bytes of init code\n`);
}
