// Runs checks.mjs under Node while developing (the tests run the same checks in Chromium).
import { CHECKS } from "./checks.mjs";

let failed = 0;
for (const check of CHECKS) {
  try {
    await check();
    console.log(`ok   ${check.name}`);
  } catch (error) {
    failed += 1;
    console.log(`FAIL ${check.name}: ${error.stack}`);
  }
}
process.exit(failed ? 1 : 0);
