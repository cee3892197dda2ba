//! Loading one layer's weights from a safetensors checkpoint with Hugging Face tensor names: from
//! one file ([`load_layer`], [`layer_from_bytes`]) or from a model directory ([`ModelDir`]:
//! `config.json`, and `model.safetensors` or `model.safetensors.index.json` with its shards,
//! memory-mapped).
//!
//! For layer `i` the loader reads `model.layers.{i}.input_layernorm.weight [H]`,
//! `model.layers.{i}.self_attn.{q,k,v}_proj.weight` (`[Hq, H]`, `[Hkv, H]`, `[Hkv, H]`) and, when
//! `config.bias` is set, `model.layers.{i}.self_attn.{q,k,v}_proj.bias`. Every tensor must already
//! be stored in the dtype asked for: nothing is converted, so what runs is what the file holds.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype as FileDtype, SafeTensors};

use crate::dtype::{bf16, f16};
use crate::{Dtype, DtypeKind, Error, ModelConfig, QkvConfig, QkvWeights, Result};

/// Prefix shared by every tensor of every decoder layer.
const LAYERS_PREFIX: &str = "model.layers.";

/// The three projections, in the order their rows are fused (q | k | v).
const PROJECTIONS: [&str; 3] = ["q_proj", "k_proj", "v_proj"];

/// Reads the safetensors file at `path` and returns layer `layer`'s weights in dtype `T`.
///
/// The whole file is read into memory; for sharded checkpoints pass the shard that holds the layer.
/// Fails with [`Error::Io`] when the file cannot be read and with [`Error::Checkpoint`] when it is
/// not safetensors or a tensor is missing or has the wrong shape or dtype (see [`layer_from_bytes`]).
pub fn load_layer<T: Dtype>(path: &Path, config: &QkvConfig, layer: usize) -> Result<QkvWeights<T>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    layer_from_bytes(&bytes, path, config, layer)
}

/// Parses `bytes` as a safetensors file and returns layer `layer`'s weights in dtype `T`.
///
/// `path` only names the file in error messages. Reads the tensors listed by
/// [`tensor_names`]`(layer, config.bias)`; each must have the shape `config` implies and be stored
/// as `T` (bf16, f16 or f32), without conversion. Fails with [`Error::Checkpoint`] when the bytes
/// are not safetensors, the layer or some of its tensors are missing, a tensor's shape or dtype is
/// wrong, or the file has biases for the layer while `config.bias` is false. Never panics on any
/// file content.
pub fn layer_from_bytes<T: Dtype>(
    bytes: &[u8],
    path: &Path,
    config: &QkvConfig,
    layer: usize,
) -> Result<QkvWeights<T>> {
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| checkpoint_error(path, format!("not a valid safetensors file: {e:?}")))?;
    layer_from_source(&OneFile { file, path }, config, layer)
}

/// The tensor `name` of the safetensors file at `path`, stored as `T` (nothing is converted), and
/// its shape: e.g. inputs and expected outputs written by another implementation.
pub fn load_tensor<T: Dtype>(path: &Path, name: &str) -> Result<(Vec<usize>, Vec<T>)> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| checkpoint_error(path, format!("not a valid safetensors file: {e:?}")))?;
    let source = OneFile { file, path };
    let (view, _) = source.find(name).ok_or_else(|| checkpoint_error(path, format!("no tensor {name}")))?;
    let shape = view.shape().to_vec();
    let values = TensorReader { source: &source }.read::<T>(name, &shape)?;
    Ok((shape, values))
}

/// Where a layer's tensors come from: one parsed file, or a model directory's shards.
trait TensorSource {
    /// The tensor called `name` and the file that holds it, `None` if there is none.
    fn find(&self, name: &str) -> Option<(TensorView<'_>, &Path)>;
    /// Every tensor name.
    fn names(&self) -> Vec<&str>;
    /// What an error about the checkpoint as a whole names.
    fn path(&self) -> &Path;
}

struct OneFile<'data, 'p> {
    file: SafeTensors<'data>,
    path: &'p Path,
}

impl TensorSource for OneFile<'_, '_> {
    fn find(&self, name: &str) -> Option<(TensorView<'_>, &Path)> {
        self.file.tensor(name).ok().map(|view| (view, self.path))
    }

    fn names(&self) -> Vec<&str> {
        self.file.names().into_iter().map(String::as_str).collect()
    }

    fn path(&self) -> &Path {
        self.path
    }
}

fn layer_from_source<T: Dtype>(source: &impl TensorSource, config: &QkvConfig, layer: usize) -> Result<QkvWeights<T>> {
    config.validate()?;
    check_layer_tensors(source, config, layer)?;

    let (hidden, q_cols, kv_cols) = (config.hidden, config.q_cols(), config.kv_cols());
    let reader = TensorReader { source };
    let gamma = reader.read::<T>(&norm_name(layer), &[hidden])?;
    let q_weight = reader.read::<T>(&projection_name(layer, "q_proj", "weight"), &[q_cols, hidden])?;
    let k_weight = reader.read::<T>(&projection_name(layer, "k_proj", "weight"), &[kv_cols, hidden])?;
    let v_weight = reader.read::<T>(&projection_name(layer, "v_proj", "weight"), &[kv_cols, hidden])?;
    let bias = if config.bias {
        Some([
            reader.read::<T>(&projection_name(layer, "q_proj", "bias"), &[q_cols])?,
            reader.read::<T>(&projection_name(layer, "k_proj", "bias"), &[kv_cols])?,
            reader.read::<T>(&projection_name(layer, "v_proj", "bias"), &[kv_cols])?,
        ])
    } else {
        None
    };
    let bias_slices = bias.as_ref().map(|[q, k, v]| [q.as_slice(), k.as_slice(), v.as_slice()]);
    QkvWeights::from_separate(*config, gamma, [&q_weight, &k_weight, &v_weight], bias_slices)
}

/// The single-file checkpoint of a model directory, and its sharded checkpoint's index.
const SINGLE_FILE: &str = "model.safetensors";
const INDEX_FILE: &str = "model.safetensors.index.json";

/// A Hugging Face model directory: `config.json` ([`ModelConfig`]) and either `model.safetensors`
/// or `model.safetensors.index.json` with the shards it names. Every shard is memory-mapped and
/// its header validated when the directory is opened (a truncated or corrupt shard, a shard the
/// index names but the directory lacks, or a tensor the index places in a shard that does not
/// hold it is an error then); tensor data is read from the maps only when a layer is loaded, so
/// no shard is ever read whole.
///
/// The maps assume the files do not change while the `ModelDir` lives (as every
/// memory-mapping loader does): do not rewrite a checkpoint that a running process has open.
pub struct ModelDir {
    dir: PathBuf,
    config: ModelConfig,
    /// The file holding each tensor.
    weight_map: BTreeMap<String, String>,
    /// The files, by name.
    shards: BTreeMap<String, Shard>,
}

/// One memory-mapped file of a model directory, its header parsed once, at open.
struct Shard {
    path: PathBuf,
    map: memmap2::Mmap,
    /// Where the tensor data starts in the map (after the header).
    data_start: usize,
    header: safetensors::tensor::Metadata,
}

impl ModelDir {
    /// Opens the model directory `dir` (see the type's docs for what is checked).
    pub fn open(dir: &Path) -> Result<Self> {
        let config = ModelConfig::from_hf_config(dir)?;
        let (index, single) = (dir.join(INDEX_FILE), dir.join(SINGLE_FILE));
        let named: Option<BTreeMap<String, String>> = if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|source| Error::Io { path: index.clone(), source })?;
            let parsed: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| checkpoint_error(&index, format!("not a safetensors index: {e}")))?;
            let map = parsed.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| {
                checkpoint_error(&index, "no \"weight_map\" object (tensor name -> shard file)".into())
            })?;
            let mut weight_map = BTreeMap::new();
            for (name, file) in map {
                let file = file
                    .as_str()
                    .filter(|f| !f.is_empty() && !f.contains(['/', '\\']) && *f != "." && *f != "..")
                    .ok_or_else(|| {
                        checkpoint_error(&index, format!("tensor {name}: {file} is not a file name in the directory"))
                    })?;
                weight_map.insert(name.clone(), file.to_string());
            }
            Some(weight_map)
        } else if single.is_file() {
            None
        } else {
            return Err(checkpoint_error(dir, format!("neither {SINGLE_FILE} nor {INDEX_FILE} is in the directory")));
        };
        let files: BTreeSet<String> = match &named {
            Some(weight_map) => weight_map.values().cloned().collect(),
            None => [SINGLE_FILE.to_string()].into(),
        };
        let indexed = named.is_some();
        let mut weight_map = named.unwrap_or_default();
        let mut shards = BTreeMap::new();
        for file in files {
            let path = dir.join(&file);
            let handle = std::fs::File::open(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
            // SAFETY: the map is only read, and the type's docs ask that the file not change while
            // it is mapped; a file truncated meanwhile could fault a read (as for any mmap loader).
            let map =
                unsafe { memmap2::Mmap::map(&handle) }.map_err(|source| Error::Io { path: path.clone(), source })?;
            // Checks the header against the file's length: every tensor's bytes are in the map.
            let (header_len, header) = SafeTensors::read_metadata(&map).map_err(|e| {
                checkpoint_error(&path, format!("not a valid safetensors file (truncated or corrupt?): {e:?}"))
            })?;
            if indexed {
                let absent: Vec<&str> = weight_map
                    .iter()
                    .filter(|(name, f)| **f == file && header.info(name).is_none())
                    .map(|(name, _)| name.as_str())
                    .collect();
                if !absent.is_empty() {
                    return Err(checkpoint_error(
                        &path,
                        format!("the index places {} here, the file lacks them", absent.join(", ")),
                    ));
                }
            } else {
                weight_map.extend(header.tensors().into_keys().map(|name| (name, file.clone())));
            }
            shards.insert(file, Shard { path, map, data_start: 8 + header_len, header });
        }
        Ok(ModelDir { dir: dir.to_path_buf(), config, weight_map, shards })
    }

    /// The model's config (from `config.json`).
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Layer `layer`'s weights in dtype `T` (stored as `T` in the checkpoint: nothing is
    /// converted), checked as [`layer_from_bytes`] checks a file.
    pub fn load_layer<T: Dtype>(&self, layer: usize) -> Result<QkvWeights<T>> {
        if layer >= self.config.layers {
            return Err(checkpoint_error(
                &self.dir,
                format!("layer {layer} is past the model's {} layers (config.json)", self.config.layers),
            ));
        }
        layer_from_source(self, &self.config.qkv, layer)
    }

    /// Rank `rank`'s share of layer `layer` under tensor parallelism over `world_size` ranks
    /// ([`QkvWeights::shard`]: query heads split, kv heads split or replicated).
    pub fn load_layer_shard<T: Dtype>(&self, layer: usize, rank: usize, world_size: usize) -> Result<QkvWeights<T>> {
        self.load_layer::<T>(layer)?.shard(rank, world_size)
    }

    /// Layer `layer`'s attention-prologue weights: [`ModelDir::load_layer`]'s, and for a model with
    /// q/k norms (Qwen3) `model.layers.{layer}.self_attn.{q,k}_norm.weight` (`[head_dim]`, stored as
    /// `T`); a model without them that has those tensors is an error, as for biases.
    pub fn load_prologue_layer<T: Dtype>(&self, layer: usize) -> Result<crate::prologue::PrologueWeights<T>> {
        let qkv = self.load_layer::<T>(layer)?;
        let names = ["q_norm", "k_norm"].map(|norm| format!("{LAYERS_PREFIX}{layer}.self_attn.{norm}.weight"));
        let reader = TensorReader { source: self };
        let head_dim = self.config.qkv.head_dim;
        let (q_norm, k_norm) = if self.config.qk_norm {
            (Some(reader.read::<T>(&names[0], &[head_dim])?), Some(reader.read::<T>(&names[1], &[head_dim])?))
        } else {
            if let Some(name) = names.iter().find(|name| has_tensor(self, name)) {
                return Err(checkpoint_error(
                    &self.dir,
                    format!("the checkpoint has {name} but the model type {} has no q/k norm", self.config.model_type),
                ));
            }
            (None, None)
        };
        crate::prologue::PrologueWeights::new(qkv, q_norm, k_norm)
    }

    /// Layers `layers` in order, each as [`ModelDir::load_layer`].
    pub fn load_layers<T: Dtype>(&self, layers: std::ops::Range<usize>) -> Result<Vec<QkvWeights<T>>> {
        layers.map(|layer| self.load_layer(layer)).collect()
    }
}

impl TensorSource for ModelDir {
    fn find(&self, name: &str) -> Option<(TensorView<'_>, &Path)> {
        let shard = self.shards.get(self.weight_map.get(name)?)?;
        let info = shard.header.info(name)?;
        // The header was checked against the map when the directory was opened.
        let data = shard.map.get(shard.data_start + info.data_offsets.0..shard.data_start + info.data_offsets.1)?;
        let view = TensorView::new(info.dtype, info.shape.clone(), data).ok()?;
        Some((view, shard.path.as_path()))
    }

    fn names(&self) -> Vec<&str> {
        self.weight_map.keys().map(String::as_str).collect()
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

/// The names of the tensors [`layer_from_bytes`] reads for `layer`: the norm weight, the q, k and
/// v projection weights and, when `bias` is set, the q, k and v biases, in that order.
pub fn tensor_names(layer: usize, bias: bool) -> Vec<String> {
    let mut names = vec![norm_name(layer)];
    names.extend(PROJECTIONS.map(|projection| projection_name(layer, projection, "weight")));
    if bias {
        names.extend(bias_names(layer));
    }
    names
}

fn norm_name(layer: usize) -> String {
    format!("{LAYERS_PREFIX}{layer}.input_layernorm.weight")
}

/// `kind` is "weight" or "bias".
fn projection_name(layer: usize, projection: &str, kind: &str) -> String {
    format!("{LAYERS_PREFIX}{layer}.self_attn.{projection}.{kind}")
}

fn bias_names(layer: usize) -> [String; 3] {
    PROJECTIONS.map(|projection| projection_name(layer, projection, "bias"))
}

fn checkpoint_error(path: &Path, reason: String) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), reason }
}

fn has_tensor(source: &impl TensorSource, name: &str) -> bool {
    source.find(name).is_some()
}

/// Checks, before decoding anything, that the layer exists and that its tensor set matches
/// `config.bias`, so that one message can list every missing tensor at once.
fn check_layer_tensors(file: &impl TensorSource, config: &QkvConfig, layer: usize) -> Result<()> {
    let path = file.path();
    let layer_prefix = format!("{LAYERS_PREFIX}{layer}.");
    if !file.names().iter().any(|name| name.starts_with(&layer_prefix)) {
        return Err(checkpoint_error(path, missing_layer_reason(file, layer)));
    }
    let missing: Vec<String> =
        tensor_names(layer, config.bias).into_iter().filter(|name| !has_tensor(file, name)).collect();
    if !missing.is_empty() {
        let all_biases = config.bias && missing.iter().all(|name| name.ends_with(".bias"));
        let hint = if all_biases { " (config.bias is true, so the q, k and v biases are required)" } else { "" };
        return Err(checkpoint_error(path, format!("layer {layer} lacks tensors {}{hint}", missing.join(", "))));
    }
    // A bias left unread would silently change every output, so a file with biases needs a config
    // that says so.
    let unused_biases: Vec<String> = bias_names(layer).into_iter().filter(|name| has_tensor(file, name)).collect();
    if !config.bias && !unused_biases.is_empty() {
        return Err(checkpoint_error(
            path,
            format!("the file has {} but config.bias is false", unused_biases.join(", ")),
        ));
    }
    Ok(())
}

/// Says the layer is absent and, from the `model.layers.{i}.` names present, which layers exist.
fn missing_layer_reason(file: &impl TensorSource, layer: usize) -> String {
    let present: BTreeSet<usize> = file
        .names()
        .iter()
        .filter_map(|name| name.strip_prefix(LAYERS_PREFIX)?.split('.').next()?.parse().ok())
        .collect();
    match (present.first(), present.last()) {
        (Some(first), Some(last)) => format!(
            "no tensors for layer {layer} ({LAYERS_PREFIX}{layer}.*); the file seems to have {} layers, \
             indices {first}..={last}",
            present.len()
        ),
        _ => {
            format!("no tensors for layer {layer} ({LAYERS_PREFIX}{layer}.*); the file has no {LAYERS_PREFIX}* tensors")
        }
    }
}

/// The file's name for a dtype.
fn file_dtype(kind: DtypeKind) -> FileDtype {
    match kind {
        DtypeKind::Bf16 => FileDtype::BF16,
        DtypeKind::F16 => FileDtype::F16,
        DtypeKind::F32 => FileDtype::F32,
    }
}

/// Reads named tensors of a checkpoint, checking each against the shape the config implies.
struct TensorReader<'a, S> {
    source: &'a S,
}

impl<S: TensorSource> TensorReader<'_, S> {
    fn read<T: Dtype>(&self, name: &str, expected_shape: &[usize]) -> Result<Vec<T>> {
        let missing = || checkpoint_error(self.source.path(), format!("tensor {name}: missing"));
        let (view, path) = self.source.find(name).ok_or_else(missing)?;
        let error = |reason: String| checkpoint_error(path, format!("tensor {name}: {reason}"));
        let wanted = file_dtype(T::KIND);
        if view.dtype() != wanted {
            return Err(error(format!("the file stores {:?}, wanted {wanted:?} ({})", view.dtype(), T::KIND)));
        }
        let shape = view.shape();
        if shape != expected_shape {
            return Err(error(format!("expected shape {expected_shape:?}, the file has {shape:?}")));
        }
        decode_le::<T>(view.data())
            .filter(|values| values.len() * T::KIND.size_bytes() == view.data().len())
            .ok_or_else(|| error(format!("cannot decode {} bytes as {}", view.data().len(), T::KIND)))
    }
}

/// Decodes little-endian `bytes` into `T`, bit for bit. Decoding goes through the concrete type
/// that `T::KIND` names and back to `T` by downcast, because `Dtype` has no from-bits constructor and
/// a round trip through f32 could alter NaN payloads. `None` only if `T` is not that type.
fn decode_le<T: Dtype>(bytes: &[u8]) -> Option<Vec<T>> {
    let values: Box<dyn Any> = match T::KIND {
        DtypeKind::Bf16 => Box::new(decode_chunks(bytes, |b: [u8; 2]| bf16::from_bits(u16::from_le_bytes(b)))),
        DtypeKind::F16 => Box::new(decode_chunks(bytes, |b: [u8; 2]| f16::from_bits(u16::from_le_bytes(b)))),
        DtypeKind::F32 => Box::new(decode_chunks(bytes, f32::from_le_bytes)),
    };
    values.downcast::<Vec<T>>().ok().map(|values| *values)
}

/// Splits `bytes` into `N`-byte chunks by copying, since tensor data in a file need not be aligned
/// for `U`. A trailing partial chunk is dropped; the caller checks the decoded length.
fn decode_chunks<const N: usize, U>(bytes: &[u8], from_le: impl Fn([u8; N]) -> U) -> Vec<U> {
    bytes.chunks_exact(N).filter_map(|chunk| <[u8; N]>::try_from(chunk).ok()).map(from_le).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_names_lists_hugging_face_names_in_fused_order() {
        let base = [
            "model.layers.3.input_layernorm.weight",
            "model.layers.3.self_attn.q_proj.weight",
            "model.layers.3.self_attn.k_proj.weight",
            "model.layers.3.self_attn.v_proj.weight",
        ];
        let biases = [
            "model.layers.3.self_attn.q_proj.bias",
            "model.layers.3.self_attn.k_proj.bias",
            "model.layers.3.self_attn.v_proj.bias",
        ];
        assert_eq!(tensor_names(3, false), base);
        assert_eq!(tensor_names(3, true), [base.as_slice(), biases.as_slice()].concat());
    }

    #[test]
    fn decode_le_reads_unaligned_little_endian_bits() {
        // One leading byte puts every element at an odd address.
        let bytes = [0xAA, 0x80, 0x3F, 0x00, 0xC0];
        assert_eq!(decode_le::<bf16>(&bytes[1..]), Some(vec![bf16::from_f32(1.0), bf16::from_f32(-2.0)]));
        assert_eq!(decode_le::<f16>(&[0x00, 0x3C]), Some(vec![f16::from_f32(1.0)]));
        assert_eq!(decode_le::<f32>(&[0xAA, 0x00, 0x00, 0x80, 0x3F][1..]), Some(vec![1.0f32]));
    }
}
