//! `measure [<device>...]`: dmsetup's `measure`, a `status` with
//! DM_IMA_MEASUREMENT_FLAG: one `<start> <len> <type> <ima>` line per target,
//! where `<ima>` is the target's STATUSTYPE_IMA text (`target_name=...;`,
//! empty for targets without one, as `error` and `zero`). Prefixes and
//! `--target`, `--inactive`, `-v` behave as for `status`.

use super::ctx::{CmdResult, Ctx};
use super::status::{self, Kind};

pub fn run(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    status::run(ctx, args, Kind::Measure)
}
