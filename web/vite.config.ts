import { defineConfig } from 'vite';
import preact from '@preact/preset-vite';

// The app is served by the gateway at `/`, next to the API under `/api`; `npm run dev` proxies
// `/api` to the local gateway so the dev server speaks to the real stack.
export default defineConfig({
  plugins: [preact()],
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    sourcemap: false,
    target: 'es2022',
  },
  server: {
    proxy: { '/api': 'http://127.0.0.1:8080' },
  },
});
