// `deno task bench`: runs every benchmark in turn (sections are added as they land).
import { runCaptureBench } from "./capture.ts";

await runCaptureBench();
