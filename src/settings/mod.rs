//! Settings declared once, and the recipe files that hold them.
//!
//! `options!` turns one list of fields, each with its doc comment, its type
//! and any clap attributes, into two structs:
//! - the settings themselves, every value present (serde: what a run folder records and a
//!   report prints; keys in kebab-case, as the flags);
//! - their overrides, every field an `Option`: read from a TOML file (serde, an unknown key is
//!   an error that names it) and from the command line (clap, `--kebab-name`, the doc comment
//!   as its help), then applied over the settings in that order.
//!
//! A field is `req T` (always present) or `opt T` (an `Option<T>` in the settings too: a limit
//! or a model that is off unless set). Defaults are not written here: a complete file (the
//! seed preset) names every `req` value, and `from_complete` refuses one that does not.

/// Declares settings `$name` and their overrides `$flags` (see the module header).
macro_rules! options {
    (
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident / $flags:ident {
            $(
                $(#[doc = $doc:literal])*
                $(#[arg($($arg:tt)*)])*
                $field:ident : $kind:ident $ty:ty
            ),* $(,)?
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "kebab-case", deny_unknown_fields)]
        pub struct $name {
            $(
                $(#[doc = $doc])*
                pub $field: $crate::settings::options!(@ty $kind $ty),
            )*
        }

        #[doc = concat!("Overrides of [`", stringify!($name), "`]: from a TOML file or the command line.")]
        #[derive(Clone, Debug, Default, PartialEq, clap::Args, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "kebab-case", deny_unknown_fields)]
        pub struct $flags {
            $(
                $(#[doc = $doc])*
                #[arg(long)]
                $(#[arg($($arg)*)])*
                pub $field: Option<$ty>,
            )*
        }

        impl $name {
            /// Sets every field that `flags` holds.
            pub fn apply(&mut self, flags: &$flags) {
                $(
                    if let Some(v) = &flags.$field {
                        $crate::settings::options!(@set $kind self.$field, v);
                    }
                )*
            }

            /// The settings of a complete set of overrides; else an error naming the keys
            /// that are missing.
            pub fn from_complete(flags: $flags) -> std::result::Result<Self, String> {
                let mut missing: Vec<String> = Vec::new();
                $(
                    if $crate::settings::options!(@required $kind) && flags.$field.is_none() {
                        missing.push($crate::settings::options!(@key $field));
                    }
                )*
                if !missing.is_empty() {
                    return Err(format!("missing {}", missing.join(", ")));
                }
                Ok(Self {
                    $( $field: $crate::settings::options!(@take $kind flags.$field), )*
                })
            }

            /// Every value as an override (for files that name every key).
            pub fn to_flags(&self) -> $flags {
                $flags {
                    $( $field: $crate::settings::options!(@give $kind self.$field), )*
                }
            }
        }

        impl $flags {
            /// These overrides without the keys that `other` sets.
            pub fn without(&self, other: &$flags) -> $flags {
                $flags {
                    $( $field: if other.$field.is_some() { None } else { self.$field.clone() }, )*
                }
            }

            /// These overrides over `base`: each key this one sets, else the base's.
            pub fn over(&self, base: &$flags) -> $flags {
                $flags {
                    $( $field: self.$field.clone().or_else(|| base.$field.clone()), )*
                }
            }

            /// The keys set, kebab-case.
            pub fn keys(&self) -> Vec<String> {
                let mut k = Vec::new();
                $( if self.$field.is_some() { k.push($crate::settings::options!(@key $field)); } )*
                k
            }
        }
    };
    (@ty req $t:ty) => { $t };
    (@ty opt $t:ty) => { Option<$t> };
    (@required req) => { true };
    (@required opt) => { false };
    (@set req $dst:expr, $v:expr) => { $dst = $v.clone() };
    (@set opt $dst:expr, $v:expr) => { $dst = Some($v.clone()) };
    (@take req $v:expr) => { $v.expect("checked above") };
    (@take opt $v:expr) => { $v };
    (@give req $v:expr) => { Some($v.clone()) };
    (@give opt $v:expr) => { $v.clone() };
    (@key $field:ident) => { $crate::settings::kebab(stringify!($field)) };
}

pub(crate) use options;

/// `key_dim` -> `key-dim`: a field's key in files and flags (serde's and clap's renaming).
pub fn kebab(snake: &str) -> String {
    snake.replace('_', "-")
}

pub mod recipe;
pub mod sample;
pub mod train;
