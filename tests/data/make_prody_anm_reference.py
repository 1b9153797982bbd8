"""Regenerate ``prody_anm_4ake_ca.npz``: ProDy's ANM of the CA atoms of 4AKE chain A.

Run from the repository root with ProDy installed (2.6.1 was used):

    python tests/data/make_prody_anm_reference.py

ProDy is a test-time reference only, never a runtime dependency of deephemnma.
"""

import json
from pathlib import Path

import numpy as np
import prody

HERE = Path(__file__).parent
MODEL = HERE.parents[1] / "src" / "deephemnma" / "data" / "4ake_A.pdb"
CUTOFF_A, GAMMA, N_MODES = 15.0, 1.0, 20


def main() -> None:
    prody.confProDy(verbosity="none")
    atoms = prody.parsePDB(str(MODEL)).select("calpha")
    anm = prody.ANM("4AKE chain A CA")
    anm.buildHessian(atoms, cutoff=CUTOFF_A, gamma=GAMMA)
    anm.calcModes(n_modes=N_MODES, zeros=True)  # modes 1-20, the six zero modes included
    values = anm.getEigvals()
    vectors = anm.getEigvecs().T.reshape(N_MODES, -1, 3)
    provenance = {
        "tool": f"ProDy {prody.__version__}",
        "call": "ANM.buildHessian(parsePDB('4ake_A.pdb').select('calpha'), cutoff=15.0, "
        "gamma=1.0); ANM.calcModes(n_modes=20, zeros=True)",
        "model": "src/deephemnma/data/4ake_A.pdb (4AKE chain A), CA atoms",
        "stored": "eigenvalues of modes 7-20; eigenvectors of modes 7-16 (unit norm, ProDy "
        "signs); CA coordinates",
    }
    np.savez(
        HERE / "prody_anm_4ake_ca.npz",
        coords_A=atoms.getCoords().astype(np.float64),
        resnums=atoms.getResnums().astype(np.int64),
        eigenvalues_7_20=values[6:20],
        vectors_7_16=vectors[6:16],
        provenance=np.array(json.dumps(provenance)),
    )


if __name__ == "__main__":
    main()
