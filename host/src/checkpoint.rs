//! Loading one layer's weights from a safetensors checkpoint (placeholder, replaced below).
